"""Brax locomotion / control tasks for populations of masked MLP policies.

Rollouts and evaluation are :class:`~synprune_jax.tasks.rollout.EpisodeTask`'s (masks applied
once, ``vmap`` over individuals and episodes, a fixed-length ``lax.scan`` with an alive mask);
this module says how a Brax env resets, steps and what it measures: ``final_xy`` (link 0 at the
last alive step) and feet contact.

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

from synprune_jax.networks import MLPSpec
from synprune_jax.tasks import descriptors as descriptors_lib
from synprune_jax.tasks.rollout import (
    EpisodeTask,
    StateEnvEpisode,
    check_choice,
    check_episodes,
    policy_spec,
)

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


@functools.cache
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


@functools.cache
def env_sizes(env_name: str, backend: str, mjx_fast_solver: bool = False) -> tuple[int, int]:
    """``(observation_size, action_size)`` via ``jax.eval_shape`` (never an eager reset)."""
    env = make_env(env_name, backend, mjx_fast_solver)
    with jax.numpy_rank_promotion("allow"):
        state = jax.eval_shape(env.reset, jax.random.key(0))
    return int(state.obs.shape[-1]), int(env.action_size)


@dataclasses.dataclass(frozen=True)
class _FootGeometry:
    """Sphere/capsule geoms of the feet, as static numpy arrays (G geoms, F feet)."""

    link: np.ndarray  # [G] int, Brax link of each geom
    foot: np.ndarray  # [G] int, foot index of each geom
    position: np.ndarray  # [G, 3] geom centre in the link frame
    half_axis: np.ndarray  # [G, 3] capsule half-segment in the link frame (0 for spheres)
    radius: np.ndarray  # [G]
    num_feet: int


@functools.cache
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
    return _FootGeometry(
        np.asarray(links),
        np.asarray(feet),
        np.stack(centres).astype(np.float32),
        np.stack(axes).astype(np.float32),
        np.asarray(radii, np.float32),
        len(FEET[env_name]),
    )


def _rotate_np(vector: np.ndarray, quaternion: np.ndarray) -> np.ndarray:
    w, u = quaternion[0], quaternion[1:]
    return vector + 2.0 * np.cross(u, np.cross(u, vector) + w * vector)


def rotate(vectors: jax.Array, quaternions: jax.Array) -> jax.Array:
    """Rotates ``vectors [..., 3]`` by unit quaternions ``[..., 4]`` (``w, x, y, z``)."""
    w, u = quaternions[..., :1], quaternions[..., 1:]
    return vectors + 2.0 * jnp.cross(u, jnp.cross(u, vectors) + w * vectors)


def feet_lowest_points(
    geometry: _FootGeometry, link_positions: jax.Array, link_rotations: jax.Array
) -> jax.Array:
    """Lowest world z ``[F]`` of each foot, for one state (``x.pos [links, 3]``, ``x.rot``)."""
    position = link_positions[geometry.link]
    rotation = link_rotations[geometry.link]
    centre = position + rotate(jnp.asarray(geometry.position), rotation)
    half_axis = rotate(jnp.asarray(geometry.half_axis), rotation)
    lowest = centre[:, 2] - jnp.abs(half_axis[:, 2]) - jnp.asarray(geometry.radius)
    return jnp.stack(
        [jnp.min(lowest[np.nonzero(geometry.foot == foot)[0]]) for foot in range(geometry.num_feet)]
    )


@dataclasses.dataclass(frozen=True)
class BraxTask(StateEnvEpisode, EpisodeTask):
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

    :meth:`evaluate` takes a PRNG key and a :class:`~synprune_jax.types.Population` of policies
    (params and masks shaped like :attr:`spec`'s, with a leading ``[P]`` axis) and returns an
    :class:`~synprune_jax.types.EvalResult`: fitness ``[P]`` float32 (the mean over episodes of
    the summed rewards while alive), descriptors ``[P, D]`` float32 (:attr:`descriptor_names`),
    extras ``density`` and ``episode_length`` ``[P]`` (plus the trajectories with
    ``keep_trajectories``; see :mod:`synprune_jax.tasks.rollout`).

    Construction imports Brax (seconds) but builds no environment; :attr:`observation_size`,
    :attr:`action_size` and :attr:`spec` build it once (cached) and read the sizes with
    ``jax.eval_shape``.

    Raises:
        ValueError: an unknown ``env_name``, ``backend`` or descriptor name, a descriptor the
            env cannot compute, ``mjx_fast_solver`` without ``backend="mjx"``, an
            ``episode_length`` / ``num_episodes`` that is not an int >= 1, or ``xy_bound <= 0``.
        ImportError: Brax is not installed (the ``tasks`` extra).

    Examples:
        >>> BraxTask.backend, BraxTask.episode_length  # the defaults; nothing imports Brax
        ('spring', 100)
        >>> task = BraxTask("hopper", episode_length=10, hidden_sizes=(8,),  # doctest: +SKIP
        ...                 descriptors=("final_xy", "feet_contact"))
        >>> task.observation_size, task.action_size, task.spec.layer_sizes  # doctest: +SKIP
        (11, 3, (11, 8, 3))
        >>> task.feet, task.descriptor_names  # doctest: +SKIP
        (('foot',), ('final_x', 'final_y', 'feet_contact_foot'))
        >>> from synprune_jax.types import Population
        >>> keys = jax.random.split(jax.random.key(0), 2)  # doctest: +SKIP
        >>> params = jax.vmap(task.init_params)(keys)  # doctest: +SKIP
        >>> masks = task.spec.full_masks(params)  # doctest: +SKIP
        >>> population = Population(params, masks, jnp.zeros((2, 2)))  # doctest: +SKIP
        >>> result = jax.jit(task.evaluate)(jax.random.key(1), population)  # doctest: +SKIP
        >>> result.fitness.shape, result.descriptors.shape, sorted(result.extras)  # doctest: +SKIP
        ((2,), (2, 3), ['density', 'episode_length'])
        >>> BraxTask("hopper", mjx_fast_solver=True)  # doctest: +SKIP
        Traceback (most recent call last):
        ...
        ValueError: mjx_fast_solver only applies to backend 'mjx', got backend 'spring'
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

    rank_promotion = "allow"  # Brax's internals broadcast implicitly

    def __post_init__(self):
        # Cheap checks only: nothing here creates an env, traces or compiles.
        owner = f"BraxTask(env_name={self.env_name!r})"
        check_choice("Brax", "env", self.env_name, env_names())
        check_choice("Brax", "backend", self.backend, BACKENDS)
        if self.mjx_fast_solver and self.backend != "mjx":
            raise ValueError(
                f"mjx_fast_solver only applies to backend 'mjx', got backend {self.backend!r}"
            )
        check_episodes(owner, self.episode_length, self.num_episodes)
        if not float(self.xy_bound) > 0:
            raise ValueError(f"xy_bound must be > 0, got {self.xy_bound}")
        object.__setattr__(self, "hidden_sizes", tuple(int(h) for h in self.hidden_sizes))
        names = descriptors_lib.validate(
            self.descriptors,
            self._context(with_spec=False),
            f"BraxTask(env_name={self.env_name!r})",
        )
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
            capabilities=frozenset(capabilities),
            spec=self.spec if with_spec else None,
            feet=self.feet,
            xy_bound=float(self.xy_bound),
        )

    # ----- one episode (EpisodeTask) -----------------------------------------------------------
    def _last(self, state) -> dict:
        return {"final_xy": state.pipeline_state.x.pos[0, :2].astype(jnp.float32)}

    def view_model(self):
        return self.env.sys.mj_model

    def _view(self, state) -> dict:
        pipeline = state.pipeline_state
        return {"qpos": pipeline.q, "body_pos": pipeline.x.pos, "body_quat": pipeline.x.rot}

    def _summed(self, state) -> dict:
        if "feet_contact" not in self.descriptors:
            return {}
        x = state.pipeline_state.x
        geometry = _foot_geometry(self.env_name, self.backend, self.mjx_fast_solver)
        touching = feet_lowest_points(geometry, x.pos, x.rot) < self.contact_threshold
        return {"feet_contact_steps": touching.astype(jnp.float32)}

    def _descriptor_inputs(self, out: dict, steps: jax.Array) -> dict:
        return {"final_xy": jnp.mean(out["final_xy"], axis=1)}


_policy_spec = functools.lru_cache(maxsize=None)(policy_spec)
