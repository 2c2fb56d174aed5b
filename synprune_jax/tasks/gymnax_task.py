"""gymnax environments (classic control, MinAtar, bsuite, misc) for masked MLP policies.

Any env of ``gymnax.registered_envs`` by name, rolled out by
:class:`~synprune_jax.tasks.rollout.EpisodeTask` (fixed length, alive mask, no auto-reset:
``env.step_env`` plus the env's own time limit ``is_truncated``). Observations are flattened;
the policy's tanh outputs become actions: for a continuous (``Box``) action space scaled from
``[-1, 1]`` to ``[low, high]``, for a discrete one the argmax of ``num_actions`` outputs.
Descriptors: the mask-based ones (``sparsity``, ``disconnected_fraction``, ``layer_density``).

Needs the ``gymnax`` extra: ``pip install -e ".[tasks]"``.

Example:
    >>> task = GymnaxTask("Pendulum-v1", episode_length=50)          # doctest: +SKIP
    >>> task.spec.input_size, task.spec.output_size                   # doctest: +SKIP
    (3, 1)
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from synprune_jax.networks import MLPSpec
from synprune_jax.tasks import descriptors as descriptors_lib
from synprune_jax.tasks.rollout import EpisodeTask, check_choice, check_episodes, policy_spec

BACKENDS = ("jax",)


def _gymnax():
    try:
        import gymnax
    except ImportError as error:
        raise ImportError(
            "task 'gymnax' needs gymnax: pip install -e \".[tasks]\" "
            f"(or pip install gymnax six); {error}"
        ) from error
    return gymnax


def env_names() -> tuple[str, ...]:
    """The registered gymnax environments."""
    return tuple(_gymnax().registered_envs)


@functools.cache
def make_env(env_name: str):
    """``(env, params)`` of a gymnax env, created once (eagerly, even inside a trace)."""
    with jax.ensure_compile_time_eval():
        return _gymnax().make(env_name)


@functools.cache
def _spaces(env_name: str) -> tuple[int, int, tuple[float, float] | None, tuple[int, ...]]:
    """``(observation_size, action_size, (low, high) or None for discrete actions, the
    continuous action's shape)``."""
    env, params = make_env(env_name)
    observation = env.observation_space(params)
    action = env.action_space(params)
    size = int(np.prod(observation.shape))
    if hasattr(action, "n"):  # Discrete
        return size, int(action.n), None, ()
    low, high = (
        np.broadcast_to(action.low, action.shape),
        np.broadcast_to(action.high, action.shape),
    )
    if not (np.all(low == low.flat[0]) and np.all(high == high.flat[0])):
        raise ValueError(f"gymnax env {env_name!r}: per-dimension action bounds are not supported")
    return (
        size,
        int(np.prod(action.shape)),
        (float(low.flat[0]), float(high.flat[0])),
        tuple(action.shape),
    )


@dataclasses.dataclass(frozen=True)
class GymnaxTask(EpisodeTask):
    """A gymnax environment evaluated with masked MLP policies (module docstring).

    Attributes:
        env_name: a name of ``gymnax.registered_envs`` (``"MountainCarContinuous-v0"``, ...).
        backend: ``"jax"`` (the only one; kept so every suite's config has the same keys).
        episode_length: fixed number of steps per episode (``T``).
        num_episodes: episodes per individual (``E``), averaged.
        hidden_sizes: hidden widths of the tanh policy.
        descriptors: mask-based descriptor names.
        keep_trajectories: also return observations, actions and alive flags in ``extras``.
    """

    env_name: str = "MountainCarContinuous-v0"
    backend: str = "jax"
    episode_length: int = 200
    num_episodes: int = 1
    hidden_sizes: tuple[int, ...] = (16, 16)
    descriptors: tuple[str, ...] = ("sparsity", "disconnected_fraction")
    keep_trajectories: bool = False

    step_keys = True

    def __post_init__(self):
        check_choice("gymnax", "env", self.env_name, env_names())
        check_choice("gymnax", "backend", self.backend, BACKENDS)
        check_episodes(f"GymnaxTask({self.env_name!r})", self.episode_length, self.num_episodes)
        object.__setattr__(self, "hidden_sizes", tuple(int(h) for h in self.hidden_sizes))
        names = descriptors_lib.validate(
            self.descriptors, self._context(with_spec=False), f"GymnaxTask({self.env_name!r})"
        )
        object.__setattr__(self, "descriptors", names)

    @property
    def spec(self) -> MLPSpec:
        observation_size, action_size = _spaces(self.env_name)[:2]
        return policy_spec(observation_size, action_size, self.hidden_sizes)

    @property
    def discrete(self) -> bool:
        return _spaces(self.env_name)[2] is None

    def _context(self, with_spec: bool = True) -> descriptors_lib.DescriptorContext:
        return descriptors_lib.DescriptorContext(
            capabilities=frozenset({descriptors_lib.SPEC}), spec=self.spec if with_spec else None
        )

    # ----- one episode (EpisodeTask) -----------------------------------------------------------
    def _action(self, output: jax.Array) -> jax.Array:
        _, _, bounds, shape = _spaces(self.env_name)
        if bounds is None:
            return jnp.argmax(output)
        low, high = bounds
        return jnp.reshape(low + (output + 1.0) * (0.5 * (high - low)), shape)

    def _reset(self, key: jax.Array):
        env, params = make_env(self.env_name)
        observation, state = env.reset_env(key, params)
        return {
            "observation": jnp.reshape(observation, (-1,)).astype(jnp.float32),
            "state": state,
            "reward": jnp.zeros((), jnp.float32),
            "done": jnp.asarray(False),
        }

    def _step(self, state, action: jax.Array, key: jax.Array):
        env, params = make_env(self.env_name)
        observation, inner, reward, terminated, _ = env.step_env(
            key, state["state"], action, params
        )
        done = jnp.logical_or(terminated, env.is_truncated(inner, params))
        return {
            "observation": jnp.reshape(observation, (-1,)).astype(jnp.float32),
            "state": inner,
            "reward": jnp.asarray(reward, jnp.float32).reshape(()),
            "done": jnp.asarray(done, bool).reshape(()),
        }

    def _observation(self, state) -> jax.Array:
        return state["observation"]

    def _reward(self, state) -> jax.Array:
        return state["reward"]

    def _done(self, state) -> jax.Array:
        return state["done"]


__all__ = ["BACKENDS", "GymnaxTask", "env_names", "make_env"]
