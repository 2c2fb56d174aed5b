"""One rollout for every environment suite: fixed-length episodes of masked MLP policies.

:class:`EpisodeTask` is the base of every task that rolls a policy out in an environment
(:class:`~synprune_jax.tasks.BraxTask`, :class:`~synprune_jax.tasks.PlaygroundTask`,
:class:`~synprune_jax.tasks.GymnaxTask`, :class:`~synprune_jax.tasks.ReachAvoidArm`). A suite
says how to reset and step one episode and what to measure; the base evaluates a population
(all pure, one compiled program):

1. masks are applied **once** per individual (:func:`synprune_jax.masks.apply_masks`), so a
   pruned weight cannot influence the policy, whatever value it keeps;
2. ``jax.vmap`` over the population and over episodes (the environment on one flat batch of
   ``P * E`` episodes, the policy on ``[P, E, obs]``); every individual sees the same episode
   keys (common random numbers: an individual's result depends only on its own genome and the
   key, not on the rest of the batch);
3. ``lax.scan`` over a fixed ``episode_length`` with **no auto-reset**: ``alive`` is the product
   of ``1 - done`` so far; a step's reward counts if the episode was alive before the step (so
   the terminating step counts, as in Brax's own evaluator), selected with ``jnp.where`` so NaN
   physics after termination cannot leak into fitness.

``fitness`` is the mean over episodes of the summed counted rewards. ``extras`` always holds
``"density"`` ``[P]`` and ``"episode_length"`` ``[P]`` (alive steps, mean over episodes); with
``keep_trajectories=True`` also ``"observations"`` ``[P, E, T, obs]``, ``"actions"``
``[P, E, T, act]``, ``"alive"`` ``[P, E, T]`` (alive before each step), ``"rewards"``
``[P, E, T]`` (each step's counted reward: their sum is the return) and the suite's ``_view``
values ``[P, E, T, ...]`` (what a viewer draws, at each step's start; used by
:func:`synprune_jax.replay`).

What a suite provides (methods of the subclass, for **one** episode; ``state`` is the suite's
own pytree):

* ``_reset(key) -> state`` and ``_step(state, action, key) -> state`` (``key`` is ``None``
  unless ``step_keys`` is true: then a fresh key per step, split from the episode key);
* ``_observation(state)``, ``_reward(state)`` (float32 scalar), ``_done(state)`` (bool scalar);
* ``_action(output)``: the policy's tanh output ``[act]`` -> the env's action (default: as is);
* ``_last(state) -> dict``: values kept at the last alive step (e.g. ``final_xy``);
  ``_summed(state) -> dict``: values summed over the alive steps after reset (e.g. feet contact);
  ``_lowest(state) -> dict``: minima over the alive steps, reset included (e.g. the distance to
  an obstacle); ``_view(state) -> dict``: with ``keep_trajectories``, what a viewer needs
  (``"qpos"``, ``"body_pos" [bodies, 3]`` and ``"body_quat" [bodies, 4]`` (w, x, y, z) of the
  MuJoCo bodies after the world body, an end effector's ``"tip"``, ...);
* ``_descriptor_inputs(out, steps) -> dict``: the descriptor inputs (besides ``masks``) from the
  rollout's outputs ``[P, E, ...]`` (a ``feet_contact_steps`` sum ``[F]`` becomes the
  ``feet_contact`` input, the fraction of alive steps); ``_extras(out, steps) -> dict``: extra
  ``[P]`` results;
* ``spec`` (the policy), ``descriptors``, ``_context()``, ``episode_length``, ``num_episodes``,
  ``keep_trajectories`` (dataclass fields or properties).

Example:
    >>> task = GymnaxTask("Pendulum-v1", episode_length=50)        # doctest: +SKIP
    >>> result = jax.jit(task.evaluate)(key, population)             # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from synprune_jax import masks as masks_lib
from synprune_jax.networks import MLPSpec
from synprune_jax.tasks import descriptors as descriptors_lib
from synprune_jax.types import EvalResult, Params, Population, PyTree


class EpisodeTask:
    """The rollout and evaluation shared by the environment suites (module docstring)."""

    step_keys: bool = False  # does ``_step`` need a key
    rank_promotion: str | None = None  # "allow" for suites that broadcast implicitly (Brax)

    # ----- what a suite provides (dataclass fields or properties; see the module docstring) ----
    descriptors: tuple[str, ...]
    episode_length: int
    num_episodes: int
    keep_trajectories: bool

    def _reset(self, key: jax.Array):
        raise NotImplementedError

    def _step(self, state, action: jax.Array, key):
        raise NotImplementedError

    def _observation(self, state) -> jax.Array:
        raise NotImplementedError

    def _reward(self, state) -> jax.Array:
        raise NotImplementedError

    def _done(self, state) -> jax.Array:
        raise NotImplementedError

    @property
    def spec(self) -> MLPSpec:
        raise NotImplementedError

    def _context(self, with_spec: bool = True) -> descriptors_lib.DescriptorContext:
        raise NotImplementedError

    # ----- what a suite may override ----------------------------------------------------------
    def _action(self, output: jax.Array) -> jax.Array:
        return output

    def _last(self, state) -> dict:
        return {}

    def _summed(self, state) -> dict:
        return {}

    def _lowest(self, state) -> dict:
        return {}

    def _view(self, state) -> dict:
        return {}

    def view_model(self):
        """The ``mujoco.MjModel`` whose bodies ``_view``'s ``body_pos`` / ``body_quat`` and
        ``qpos`` describe (what :func:`synprune_jax.replay` draws and renders), or ``None``."""
        return None

    def _descriptor_inputs(self, out: dict, steps: jax.Array) -> dict:
        return {}

    def _extras(self, out: dict, steps: jax.Array) -> dict:
        return {}

    # ----- the Task protocol ------------------------------------------------------------------
    @property
    def descriptor_names(self) -> tuple[str, ...]:
        return descriptors_lib.column_names(self.descriptors, self._context())

    def descriptor_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        return descriptors_lib.bounds(self.descriptors, self._context())

    @property
    def env_steps_per_individual(self) -> int:
        return int(self.episode_length) * int(self.num_episodes)

    def maskable(self) -> PyTree:
        return self.spec.maskable()

    def init_params(self, key: jax.Array) -> Params:
        return self.spec.init(key)

    def evaluate(self, key: jax.Array, population: Population) -> EvalResult:
        """Evaluates a population (pure; jit it at the top). See :class:`~.base.Task`."""
        if self.rank_promotion is None:
            return self._evaluate(key, population)
        with jax.numpy_rank_promotion(self.rank_promotion):
            return self._evaluate(key, population)

    def _evaluate(self, key: jax.Array, population: Population) -> EvalResult:
        dense = jax.vmap(masks_lib.apply_masks)(population.params, population.masks)
        episode_keys = jax.random.split(key, self.num_episodes)
        out = self._rollouts(dense, episode_keys)  # leaves [P, E, ...]

        steps = out["steps"].astype(jnp.float32)
        inputs = {"masks": population.masks, **self._descriptor_inputs(out, steps)}
        if "feet_contact_steps" in out:  # a suite that sums feet contacts: the alive fraction
            fraction = out["feet_contact_steps"] / jnp.maximum(steps, 1.0)[..., None]
            inputs["feet_contact"] = jnp.mean(fraction, axis=1)
        context = self._context()
        descriptors = jax.vmap(lambda i: descriptors_lib.compute(self.descriptors, context, i))(
            inputs
        )
        density = jax.vmap(masks_lib.density, in_axes=(0, None))(population.masks, self.maskable())
        extras = {
            "density": density,
            "episode_length": jnp.mean(steps, axis=1),
            **self._extras(out, steps),
        }
        if self.keep_trajectories:
            extras.update(
                {name: out[name] for name in ("observations", "actions", "alive", "rewards")},
                **out["view"],
            )
        return EvalResult(
            fitness=jnp.mean(out["return"], axis=1), descriptors=descriptors, extras=extras
        )

    # ----- rollouts ---------------------------------------------------------------------------
    def policy(self, dense_params: Params, observation: jax.Array) -> jax.Array:
        """The env action of one individual with already-masked params for one observation."""
        return self._action(self.spec.apply_dense(dense_params, observation))

    def rollout(self, dense_params: Params, key: jax.Array) -> dict:
        """One episode of one individual with already-masked params (call under vmap).

        Returns:
            dict with ``"return"`` (summed counted rewards), ``"steps"`` (int32 alive steps),
            the suite's ``_last`` / ``_summed`` / ``_lowest`` values and, with
            ``keep_trajectories``, ``"observations" [T, obs]``, ``"actions" [T, act]``,
            ``"alive" [T]``, ``"rewards" [T]`` and ``"view"`` (the suite's ``_view``, ``[T, ...]``).
        """
        carry = self._first_carry(key)

        def step(carry, _):
            return self._advance(
                carry, self.policy(dense_params, self._observation(carry["state"]))
            )

        final, trace = jax.lax.scan(step, carry, None, length=self.episode_length)
        return self._outputs(final, trace)

    def _rollouts(self, dense_params: Params, keys: jax.Array) -> dict:
        """:meth:`rollout` for ``P`` individuals x ``E`` episode keys: leaves ``[P, E, ...]``.

        One ``lax.scan`` over time whose body is the environment step vmapped over a flat batch
        of ``P * E`` episodes (individual-major) and the policy on ``[P, E, obs]``; it lowers
        faster than a vmap of per-individual scans (``docs/benchmarks.md``, "flat episode
        axis"). Outputs equal :meth:`rollout` under two vmaps: bit for bit with ``E = 2``, up to
        float32 rounding with ``E = 1`` (XLA:CPU compiles a ``[P, 1, ...]`` batch differently).
        """
        population = jax.tree_util.tree_leaves(dense_params)[0].shape[0]
        episodes = keys.shape[0]
        # axis `axis` of P * E episodes (individual-major) <-> axes (axis, axis + 1) of [P, E]
        to_flat = (
            lambda leaf, axis=0: leaf.reshape(  # noqa: E731
                *leaf.shape[:axis], population * episodes, *leaf.shape[axis + 2 :]
            )
        )
        to_grid = (
            lambda leaf, axis=0: leaf.reshape(  # noqa: E731
                *leaf.shape[:axis], population, episodes, *leaf.shape[axis + 1 :]
            )
        )
        first = jax.vmap(self._first_carry)(keys)  # [E, ...]
        carry = jax.tree_util.tree_map(  # [P * E, ...]
            lambda leaf: to_flat(jnp.broadcast_to(leaf, (population, *leaf.shape))), first
        )
        policy = jax.vmap(jax.vmap(self.policy, in_axes=(None, 0)), in_axes=(0, 0))
        observe = jax.vmap(self._observation)

        def step(carry, _):
            actions = policy(dense_params, to_grid(observe(carry["state"])))
            return jax.vmap(self._advance)(carry, to_flat(actions))

        final, trace = jax.lax.scan(step, carry, None, length=self.episode_length)
        final = jax.tree_util.tree_map(to_grid, final)  # [P, E, ...]
        if trace is not None:  # [T, P * E, ...] -> [P, E, T, ...]
            trace = jax.tree_util.tree_map(
                lambda leaf: jnp.moveaxis(to_grid(leaf, axis=1), 0, 2), trace
            )
        return self._outputs(final, trace)

    def _first_carry(self, key: jax.Array) -> dict:
        if self.step_keys:
            key, reset_key = jax.random.split(key)
        else:
            reset_key = key
        state = self._reset(reset_key)
        carry = {
            "state": state,
            "alive": jnp.asarray(True),
            "return": jnp.zeros((), jnp.float32),
            "steps": jnp.zeros((), jnp.int32),
            **self._last(state),
            **{name: jnp.zeros_like(value) for name, value in self._summed(state).items()},
            **self._lowest(state),
        }
        if self.step_keys:
            carry["key"] = key
        return carry

    def _advance(self, carry: dict, action: jax.Array) -> tuple[dict, dict | None]:
        """One environment step of one episode with ``action`` (module docstring: ``alive``)."""
        state, alive = carry["state"], carry["alive"]
        new = {}
        if self.step_keys:
            new["key"], step_key = jax.random.split(carry["key"])
        else:
            step_key = None
        next_state = self._step(state, action, step_key)
        reward = jnp.where(alive, self._reward(next_state), 0.0)
        new.update(
            {
                "state": next_state,
                "alive": alive & jnp.logical_not(self._done(next_state)),
                "return": carry["return"] + reward,
                "steps": carry["steps"] + alive.astype(jnp.int32),
            }
        )
        for name, value in self._last(next_state).items():
            new[name] = jnp.where(alive, value, carry[name])
        for name, value in self._summed(next_state).items():
            new[name] = carry[name] + jnp.where(alive, value, jnp.zeros_like(value))
        for name, value in self._lowest(next_state).items():
            new[name] = jnp.where(alive, jnp.minimum(carry[name], value), carry[name])
        trace = (
            {
                "observations": self._observation(state),
                "actions": action,
                "alive": alive,
                "rewards": reward,
                "view": self._view(state),
            }
            if self.keep_trajectories
            else None
        )
        return new, trace

    def _outputs(self, final: dict, trace: dict | None) -> dict:
        out = {
            name: value for name, value in final.items() if name not in ("state", "alive", "key")
        }
        out["return"] = out["return"].astype(jnp.float32)
        if self.keep_trajectories:
            assert trace is not None  # the scan kept it
            out.update(trace)
        return out


class StateEnvEpisode:
    """The episode of an env with Brax's state API, as both Brax and MuJoCo Playground have it:
    ``self.env.reset(key) -> state`` and ``self.env.step(state, action) -> state`` with
    ``state.obs``, ``state.reward`` and ``state.done`` (mix in before :class:`EpisodeTask`)."""

    env: Any  # the Brax / Playground environment (the suite's field)

    def _reset(self, key: jax.Array):
        return self.env.reset(key)

    def _step(self, state, action: jax.Array, key):
        return self.env.step(state, action)

    def _observation(self, state) -> jax.Array:
        return state.obs

    def _reward(self, state) -> jax.Array:
        return jnp.asarray(state.reward, jnp.float32)

    def _done(self, state) -> jax.Array:
        return state.done != 0


def policy_spec(observation_size: int, action_size: int, hidden_sizes: tuple[int, ...]) -> MLPSpec:
    """The tanh MLP policy every environment suite evaluates (tanh output: ``[-1, 1]``)."""
    return MLPSpec(
        input_size=observation_size,
        output_size=action_size,
        hidden_sizes=tuple(int(h) for h in hidden_sizes),
        activation="tanh",
        output_activation="tanh",
    )


def check_episodes(owner: str, episode_length, num_episodes) -> None:
    """Raises ``ValueError`` unless both are positive integers."""
    for field, value in (("episode_length", episode_length), ("num_episodes", num_episodes)):
        if isinstance(value, bool) or int(value) != value or int(value) < 1:
            raise ValueError(f"{owner}: {field} must be an integer >= 1, got {value!r}")


def check_choice(suite: str, field: str, value, valid) -> None:
    """Raises ``ValueError("unknown <suite> <field> ...; valid: [...]")`` unless ``value`` is one
    of ``valid``."""
    if value not in valid:
        raise ValueError(f"unknown {suite} {field} {value!r}; valid: {list(valid)}")


__all__ = ["EpisodeTask", "StateEnvEpisode", "check_choice", "check_episodes", "policy_spec"]
