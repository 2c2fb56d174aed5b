"""Brax locomotion / control tasks for populations of masked MLP policies.

Evaluation of a population (all pure, one compiled program):

1. masks are applied **once** per individual (:func:`synprune_jax.masks.apply_masks`), so a
   pruned weight cannot influence the policy, whatever value it keeps;
2. ``jax.vmap`` over the population and over episodes (the physics on one flat batch of
   ``P * E`` episodes, the policy on ``[P, E, obs]``); every individual sees the same episode
   keys (common random numbers: an individual's result depends only on its own genome and the
   key, not on the rest of the batch);
3. ``lax.scan`` over a fixed ``episode_length`` with **no auto-reset**: ``alive`` is the product
   of ``1 - done`` so far; a step's reward counts if the individual was alive before the step
   (so the terminating step counts, as in Brax's own evaluator), selected with ``jnp.where`` so
   NaN physics after termination cannot leak into fitness.

``fitness`` is the mean over episodes of the summed counted rewards. ``extras`` always holds
``"density"`` ``[P]`` and ``"episode_length"`` ``[P]`` (alive steps, mean over episodes); with
``keep_trajectories=True`` also ``"observations"`` ``[P, E, T, obs]``, ``"actions"``
``[P, E, T, act]`` and ``"alive"`` ``[P, E, T]`` (alive before each step).

Feet contact is computed geometrically, because the ``spring``/``positional``/``generalized``
pipeline states carry no contact data: a foot touches the ground when the lowest point of any of
its sphere/capsule geoms is below ``contact_threshold`` (the floor plane is ``z = 0`` in every Brax
env). Geoms come from ``env.sys`` (``geom_bodyid``, ``geom_pos``, ``geom_quat``, ``geom_size``;
Brax link ``i`` is MuJoCo body ``i + 1``) and link poses from ``pipeline_state.x``.

Brax itself relies on implicit rank promotion, so the rollout is traced under
``jax.numpy_rank_promotion("allow")`` even when a test suite sets ``"raise"``.

Example:
    >>> task = BraxTask("hopper", episode_length=50, hidden_sizes=(8,))   # doctest: +SKIP
    >>> result = jax.jit(task.evaluate)(key, population)                   # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from synprune_jax import masks as masks_lib
from synprune_jax.networks import MLPSpec
from synprune_jax.tasks import descriptors as descriptors_lib
from synprune_jax.types import EvalResult, Params, Population, PyTree

BACKENDS = ("spring", "positional", "generalized", "mjx")

# Feet of each env with legs: (column label, Brax link index). Checked against
# ``env.sys.link_names`` in the tests; ant's lower-leg links have empty names.
FEET: dict[str, tuple[tuple[str, int], ...]] = {
    "hopper": (("foot", 3),),
    "walker2d": (("foot", 3), ("foot_left", 6)),
    "halfcheetah": (("bfoot", 3), ("ffoot", 6)),
    "ant": (("foot_1", 2), ("foot_2", 4), ("foot_3", 6), ("foot_4", 8)),
    "humanoid": (("right_shin", 4), ("left_shin", 6)),
}

_SPHERE, _CAPSULE = 2, 3  # MuJoCo geom types


def env_names() -> tuple[str, ...]:
    """Names of the registered Brax environments (imports brax)."""
    from brax import envs  # lazy: heavy and noisy import

    return tuple(sorted(envs._envs))


@functools.lru_cache(maxsize=None)
def make_env(env_name: str, backend: str, mjx_fast_solver: bool = False):
    """Creates (once per argument triple) a Brax environment.

    Brax builds the system with ``jnp`` operations; when the first call comes from inside a
    ``jit`` / ``eval_shape`` trace those would be tracers, cached here and leaked into every later
    program (and :func:`_foot_geometry` could not read them). ``ensure_compile_time_eval`` makes
    the construction eager wherever it is called from.
    """
    from brax import envs

    with jax.ensure_compile_time_eval():
        env = envs.get_environment(env_name, backend=backend)
        if mjx_fast_solver:
            env.sys = env.sys.tree_replace({"opt.iterations": 1, "opt.ls_iterations": 4})
    return env


@functools.lru_cache(maxsize=None)
def env_sizes(env_name: str, backend: str, mjx_fast_solver: bool = False) -> tuple[int, int]:
    """``(observation_size, action_size)`` via ``jax.eval_shape`` (never an eager reset)."""
    env = make_env(env_name, backend, mjx_fast_solver)
    with jax.numpy_rank_promotion("allow"):
        state = jax.eval_shape(env.reset, jax.random.key(0))
    return int(state.obs.shape[-1]), int(env.action_size)


@dataclasses.dataclass(frozen=True)
class _FootGeometry:
    """Sphere/capsule geoms of the feet, as static numpy arrays (G geoms, F feet)."""

    link: np.ndarray        # [G] int, Brax link of each geom
    foot: np.ndarray        # [G] int, foot index of each geom
    position: np.ndarray    # [G, 3] geom centre in the link frame
    half_axis: np.ndarray   # [G, 3] capsule half-segment in the link frame (0 for spheres)
    radius: np.ndarray      # [G]
    num_feet: int


@functools.lru_cache(maxsize=None)
def _foot_geometry(env_name: str, backend: str, mjx_fast_solver: bool) -> _FootGeometry:
    system = make_env(env_name, backend, mjx_fast_solver).sys
    body = np.asarray(system.geom_bodyid)
    kind = np.asarray(system.geom_type)
    positions = np.asarray(system.geom_pos, np.float32)
    quaternions = np.asarray(system.geom_quat, np.float32)
    sizes = np.asarray(system.geom_size, np.float32)
    links, feet, centres, axes, radii = [], [], [], [], []
    for foot_index, (label, link) in enumerate(FEET[env_name]):
        geoms = [g for g in np.nonzero(body == link + 1)[0] if kind[g] in (_SPHERE, _CAPSULE)]
        if not geoms:
            raise ValueError(f"{env_name}: foot {label!r} (link {link}) has no sphere/capsule geom")
        for g in geoms:
            half_length = sizes[g, 1] if kind[g] == _CAPSULE else 0.0
            axis = _rotate_np(np.array([0.0, 0.0, 1.0], np.float32), quaternions[g])
            links.append(link)
            feet.append(foot_index)
            centres.append(positions[g])
            axes.append(axis * half_length)
            radii.append(sizes[g, 0])
    return _FootGeometry(np.asarray(links), np.asarray(feet), np.stack(centres).astype(np.float32),
                         np.stack(axes).astype(np.float32), np.asarray(radii, np.float32),
                         len(FEET[env_name]))


def _rotate_np(vector: np.ndarray, quaternion: np.ndarray) -> np.ndarray:
    w, u = quaternion[0], quaternion[1:]
    return vector + 2.0 * np.cross(u, np.cross(u, vector) + w * vector)


def rotate(vectors: jax.Array, quaternions: jax.Array) -> jax.Array:
    """Rotates ``vectors [..., 3]`` by unit quaternions ``[..., 4]`` (``w, x, y, z``)."""
    w, u = quaternions[..., :1], quaternions[..., 1:]
    return vectors + 2.0 * jnp.cross(u, jnp.cross(u, vectors) + w * vectors)


def feet_lowest_points(geometry: _FootGeometry, link_positions: jax.Array,
                       link_rotations: jax.Array) -> jax.Array:
    """Lowest world z ``[F]`` of each foot, for one state (``x.pos [links, 3]``, ``x.rot``)."""
    position = link_positions[geometry.link]
    rotation = link_rotations[geometry.link]
    centre = position + rotate(jnp.asarray(geometry.position), rotation)
    half_axis = rotate(jnp.asarray(geometry.half_axis), rotation)
    lowest = centre[:, 2] - jnp.abs(half_axis[:, 2]) - jnp.asarray(geometry.radius)
    return jnp.stack([jnp.min(lowest[np.nonzero(geometry.foot == foot)[0]])
                      for foot in range(geometry.num_feet)])


@dataclasses.dataclass(frozen=True)
class BraxTask:
    """A Brax environment evaluated with masked MLP policies (see module docstring).

    Attributes:
        env_name: a key of ``brax.envs._envs`` (``"hopper"``, ``"ant"``, ...).
        backend: ``"spring"`` (cheapest on CPU), ``"positional"``, ``"generalized"`` or ``"mjx"``.
        episode_length: fixed number of steps per episode (``T``).
        num_episodes: episodes per individual (``E``), averaged.
        hidden_sizes: hidden widths of the tanh policy (tanh output, actions in [-1, 1]).
        descriptors: descriptor names (see :mod:`synprune_jax.tasks.descriptors`): the
            mask-based ``sparsity``, ``disconnected_fraction``, ``layer_density`` and the
            behavioural ``final_xy`` and (for envs in :data:`FEET`) ``feet_contact``.
        xy_bound: ``final_xy`` lies in ``[-xy_bound, xy_bound]^2`` (clipped).
        mjx_fast_solver: ``mjx`` only: sets ``opt.iterations = 1`` and ``opt.ls_iterations = 4``
            (ant's own setting). Much faster under vmap (the slowest individual sets the pace of
            MuJoCo's iterative solver) at some cost in physics accuracy.
        keep_trajectories: also return observations, actions and alive flags in ``extras``
            (memory: ``P * E * T * (obs + act)`` floats).
        contact_threshold: a foot touches the ground when its lowest point is below this height.
    """

    env_name: str = "hopper"
    backend: str = "spring"
    episode_length: int = 100
    num_episodes: int = 1
    hidden_sizes: tuple[int, ...] = (16, 16)
    descriptors: tuple[str, ...] = ("sparsity", "disconnected_fraction")
    xy_bound: float = 5.0
    mjx_fast_solver: bool = False
    keep_trajectories: bool = False
    contact_threshold: float = 0.02

    def __post_init__(self):
        # Cheap checks only: nothing here creates an env, traces or compiles.
        valid_envs = env_names()
        if self.env_name not in valid_envs:
            raise ValueError(f"unknown Brax env {self.env_name!r}; valid: {list(valid_envs)}")
        if self.backend not in BACKENDS:
            raise ValueError(f"unknown Brax backend {self.backend!r}; valid: {list(BACKENDS)}")
        if self.mjx_fast_solver and self.backend != "mjx":
            raise ValueError("mjx_fast_solver only applies to backend 'mjx', "
                             f"got backend {self.backend!r}")
        for field in ("episode_length", "num_episodes"):
            if int(getattr(self, field)) < 1:
                raise ValueError(f"{field} must be >= 1, got {getattr(self, field)}")
        if not float(self.xy_bound) > 0:
            raise ValueError(f"xy_bound must be > 0, got {self.xy_bound}")
        object.__setattr__(self, "hidden_sizes", tuple(int(h) for h in self.hidden_sizes))
        names = descriptors_lib.validate(self.descriptors, self._context(with_spec=False),
                                         f"BraxTask(env_name={self.env_name!r})")
        object.__setattr__(self, "descriptors", names)

    # ----- static structure ----------------------------------------------------------------------
    @property
    def env(self):
        """The (cached) Brax environment."""
        return make_env(self.env_name, self.backend, self.mjx_fast_solver)

    @property
    def observation_size(self) -> int:
        return env_sizes(self.env_name, self.backend, self.mjx_fast_solver)[0]

    @property
    def action_size(self) -> int:
        return env_sizes(self.env_name, self.backend, self.mjx_fast_solver)[1]

    @property
    def spec(self) -> MLPSpec:
        return _policy_spec(self.observation_size, self.action_size, self.hidden_sizes)

    @property
    def feet(self) -> tuple[str, ...]:
        """Foot labels (``feet_contact`` columns); empty for envs without feet."""
        return tuple(label for label, _ in FEET.get(self.env_name, ()))

    def _context(self, with_spec: bool = True) -> descriptors_lib.DescriptorContext:
        capabilities = {descriptors_lib.SPEC, descriptors_lib.ROLLOUT}
        if self.env_name in FEET:
            capabilities.add(descriptors_lib.FEET)
        return descriptors_lib.DescriptorContext(
            capabilities=frozenset(capabilities), spec=self.spec if with_spec else None,
            feet=self.feet, xy_bound=float(self.xy_bound))

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

    # ----- evaluation ---------------------------------------------------------------------------
    def evaluate(self, key: jax.Array, population: Population) -> EvalResult:
        """Evaluates a population (pure; jit it at the top). See :class:`~.base.Task`."""
        with jax.numpy_rank_promotion("allow"):  # Brax's internals broadcast implicitly
            return self._evaluate(key, population)

    def _evaluate(self, key: jax.Array, population: Population) -> EvalResult:
        dense = jax.vmap(masks_lib.apply_masks)(population.params, population.masks)
        episode_keys = jax.random.split(key, self.num_episodes)
        out = self._rollouts(dense, episode_keys)  # leaves [P, E, ...]

        steps = out["steps"].astype(jnp.float32)
        inputs = {"masks": population.masks,
                  "final_xy": jnp.mean(out["final_xy"], axis=1)}
        if "feet_contact_steps" in out:
            fraction = out["feet_contact_steps"] / jnp.maximum(steps, 1.0)[..., None]
            inputs["feet_contact"] = jnp.mean(fraction, axis=1)
        context = self._context()
        descriptors = jax.vmap(lambda i: descriptors_lib.compute(self.descriptors, context, i))(
            inputs)
        density = jax.vmap(masks_lib.density, in_axes=(0, None))(population.masks,
                                                                   self.maskable())
        extras = {"density": density, "episode_length": jnp.mean(steps, axis=1)}
        if self.keep_trajectories:
            extras.update(observations=out["observations"], actions=out["actions"],
                          alive=out["alive"])
        return EvalResult(fitness=jnp.mean(out["return"], axis=1), descriptors=descriptors,
                          extras=extras)

    def rollout(self, dense_params: Params, key: jax.Array) -> dict:
        """One episode of one individual with already-masked params (call under vmap).

        Returns:
            dict with ``"return"`` (summed counted rewards), ``"steps"`` (int32 alive steps),
            ``"final_xy"`` ``[2]`` (link 0 at the last alive step), ``"feet_contact_steps"``
            ``[F]`` (if ``feet_contact`` is requested) and, with ``keep_trajectories``,
            ``"observations" [T, obs]``, ``"actions" [T, act]``, ``"alive" [T]``.
        """
        carry = self._first_carry(key)
        step = lambda c, _: self._advance(c, self.spec.apply_dense(dense_params, c["state"].obs))
        final, trace = jax.lax.scan(step, carry, None, length=self.episode_length)
        return self._outputs(final, trace)

    def _rollouts(self, dense_params: Params, keys: jax.Array) -> dict:
        """:meth:`rollout` for ``P`` individuals x ``E`` episode keys: leaves ``[P, E, ...]``.

        One ``lax.scan`` over time whose body is the physics step vmapped over a flat batch of
        ``P * E`` episodes (individual-major) and the policy on ``[P, E, obs]``; it lowers
        faster than a vmap of per-individual scans (``docs/benchmarks.md``, "flat episode
        axis"). Outputs equal :meth:`rollout` under two vmaps: bit for bit with ``E = 2``, up to
        float32 rounding with ``E = 1`` (XLA:CPU compiles a ``[P, 1, ...]`` batch differently).
        """
        population = jax.tree_util.tree_leaves(dense_params)[0].shape[0]
        episodes = keys.shape[0]
        # axis `axis` of P * E episodes (individual-major) <-> axes (axis, axis + 1) of [P, E]
        to_flat = lambda leaf, axis=0: leaf.reshape(  # noqa: E731
            *leaf.shape[:axis], population * episodes, *leaf.shape[axis + 2:])
        to_grid = lambda leaf, axis=0: leaf.reshape(  # noqa: E731
            *leaf.shape[:axis], population, episodes, *leaf.shape[axis + 1:])
        first = jax.vmap(self._first_carry)(keys)                       # [E, ...]
        carry = jax.tree_util.tree_map(                                 # [P * E, ...]
            lambda leaf: to_flat(jnp.broadcast_to(leaf, (population, *leaf.shape))), first)
        policy = jax.vmap(jax.vmap(self.spec.apply_dense, in_axes=(None, 0)), in_axes=(0, 0))

        def step(carry, _):
            actions = policy(dense_params, to_grid(carry["state"].obs))
            return jax.vmap(self._advance)(carry, to_flat(actions))

        final, trace = jax.lax.scan(step, carry, None, length=self.episode_length)
        final = jax.tree_util.tree_map(to_grid, final)                  # [P, E, ...]
        if trace is not None:  # [T, P * E, ...] -> [P, E, T, ...]
            trace = jax.tree_util.tree_map(
                lambda leaf: jnp.moveaxis(to_grid(leaf, axis=1), 0, 2), trace)
        return self._outputs(final, trace)

    def _first_carry(self, key: jax.Array) -> dict:
        state = self.env.reset(key)
        carry = {
            "state": state,
            "alive": jnp.asarray(True),
            "return": jnp.zeros((), jnp.float32),
            "steps": jnp.zeros((), jnp.int32),
            "final_xy": state.pipeline_state.x.pos[0, :2].astype(jnp.float32),
        }
        if "feet_contact" in self.descriptors:
            carry["feet_contact_steps"] = jnp.zeros((len(self.feet),), jnp.float32)
        return carry

    def _advance(self, carry: dict, action: jax.Array) -> tuple[dict, dict | None]:
        """One environment step of one episode with ``action`` (module docstring: ``alive``)."""
        state, alive = carry["state"], carry["alive"]
        next_state = self.env.step(state, action)
        x = next_state.pipeline_state.x
        new = {
            "state": next_state,
            "alive": alive & (next_state.done == 0),
            "return": carry["return"] + jnp.where(alive, next_state.reward, 0.0),
            "steps": carry["steps"] + alive.astype(jnp.int32),
            "final_xy": jnp.where(alive, x.pos[0, :2], carry["final_xy"]),
        }
        if "feet_contact_steps" in carry:
            geometry = _foot_geometry(self.env_name, self.backend, self.mjx_fast_solver)
            touching = feet_lowest_points(geometry, x.pos, x.rot) < self.contact_threshold
            new["feet_contact_steps"] = carry["feet_contact_steps"] + jnp.where(
                alive, touching.astype(jnp.float32), 0.0)
        trace = {"observations": state.obs, "actions": action, "alive": alive} \
            if self.keep_trajectories else None
        return new, trace

    def _outputs(self, final: dict, trace: dict | None) -> dict:
        out = {name: value for name, value in final.items() if name not in ("state", "alive")}
        out["return"] = out["return"].astype(jnp.float32)
        if self.keep_trajectories:
            out.update(trace)
        return out


@functools.lru_cache(maxsize=None)
def _policy_spec(observation_size: int, action_size: int,
                 hidden_sizes: tuple[int, ...]) -> MLPSpec:
    return MLPSpec(input_size=observation_size, output_size=action_size,
                   hidden_sizes=hidden_sizes, activation="tanh", output_activation="tanh")
