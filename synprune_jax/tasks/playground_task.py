"""MuJoCo Playground environments for masked MLP policies (the maintained successor of
``brax.envs``).

Any env of ``mujoco_playground.registry`` by name, rolled out by
:class:`~synprune_jax.tasks.rollout.EpisodeTask` (fixed length, alive mask, no auto-reset).
``backend`` is Playground's physics ``impl``: ``"jax"`` (MJX in JAX, works everywhere; the
default) or ``"warp"`` (MuJoCo Warp, NVIDIA GPUs only). Descriptors: the mask-based ones,
``final_xy``, the (x, y) of the model's first body (the root: the torso, the cart, ...) at the
last alive step, and for envs with feet ``feet_contact`` (MuJoCo's contacts of each foot geom
with the floor, :func:`feet`).

The dm_control suite (CartpoleBalance, CheetahRun, HopperHop, ...) ships its models inside the
``playground`` wheel and works offline. Playground's robot envs (Go1, Panda, ...) clone
``mujoco_menagerie`` from git on first load: offline they fail, with an error saying so.

Needs the ``playground`` extra: ``pip install -e ".[tasks]"`` (Python >= 3.11).

Example:
    >>> task = PlaygroundTask("CartpoleBalance", episode_length=50)   # doctest: +SKIP
    >>> task.spec.input_size, task.spec.output_size                    # doctest: +SKIP
    (5, 1)
"""

from __future__ import annotations

import dataclasses
import functools
import sys

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

BACKENDS = ("jax", "warp")


def _registry():
    if sys.version_info < (3, 11):
        raise ImportError(
            "task 'playground' needs Python >= 3.11 (MuJoCo Playground's own "
            f"requirement); this is {sys.version.split()[0]}"
        )
    try:
        from mujoco_playground import registry
    except ImportError as error:
        raise ImportError(
            "task 'playground' needs MuJoCo Playground: pip install -e "
            f'".[tasks]" (or pip install playground); {error}'
        ) from error
    return registry


def env_names() -> tuple[str, ...]:
    """Every env Playground registers (dm_control suite, locomotion, manipulation)."""
    return tuple(_registry().ALL_ENVS)


def offline_env_names() -> tuple[str, ...]:
    """The envs whose models ship in the ``playground`` wheel (the dm_control suite)."""
    return tuple(_registry().dm_control_suite.ALL_ENVS)


@functools.cache
def make_env(env_name: str, backend: str = "jax"):
    """Loads (once per pair, eagerly even inside a trace) a Playground env with physics
    ``impl=backend``.

    Raises:
        ValueError: the env could not be loaded (a robot env whose assets are not here).
    """
    registry = _registry()
    try:
        with jax.ensure_compile_time_eval(), jax.numpy_rank_promotion("allow"):
            return registry.load(env_name, config_overrides={"impl": backend})
    except Exception as error:  # noqa: BLE001 - Playground fails in many ways offline
        offline = env_name not in offline_env_names()
        hint = (
            " (Playground's robot envs clone mujoco_menagerie from git on first load, which "
            f"needs the network; offline use one of {list(offline_env_names())})"
            if offline
            else ""
        )
        raise ValueError(
            f"Playground env {env_name!r} could not be loaded: "
            f"{type(error).__name__}: {str(error)[:200]}{hint}"
        ) from error


@functools.cache
def _spec(env_name: str, backend: str, hidden_sizes: tuple[int, ...]) -> MLPSpec:
    env = make_env(env_name, backend)
    with jax.numpy_rank_promotion("allow"):  # Playground sizes the observation with a reset
        size = env.observation_size
    if not isinstance(size, int):
        raise ValueError(
            f"Playground env {env_name!r} has a dict observation ({size}); only "
            "flat observations are supported"
        )
    return policy_spec(size, int(env.action_size), hidden_sizes)


@functools.cache
def feet(env_name: str, backend: str = "jax") -> tuple[tuple[str, ...], np.ndarray, np.ndarray]:
    """``(labels, foot geom ids, floor geom ids)`` of a Playground env: its feet are the geoms
    whose names end in ``foot`` (dm_control's hopper ``foot``, cheetah ``bfoot`` / ``ffoot``,
    walker ``left_foot`` / ``right_foot``), its floor the plane geoms; no feet: empty."""
    import mujoco

    model = make_env(env_name, backend).mj_model
    names = [
        mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_GEOM, i) or "" for i in range(model.ngeom)
    ]
    ids = [i for i, name in enumerate(names) if name.endswith("foot")]
    floors = np.nonzero(np.asarray(model.geom_type) == mujoco.mjtGeom.mjGEOM_PLANE)[0]
    return tuple(names[i] for i in ids), np.asarray(ids, np.int32), floors.astype(np.int32)


@dataclasses.dataclass(frozen=True)
class PlaygroundTask(StateEnvEpisode, EpisodeTask):
    """A MuJoCo Playground environment evaluated with masked MLP policies (module docstring).

    Attributes:
        env_name: a Playground env name (``"CartpoleSwingup"``, ``"CheetahRun"``, ...).
        backend: physics ``impl``: ``"jax"`` or ``"warp"`` (NVIDIA GPU only).
        episode_length: fixed number of steps per episode (``T``).
        num_episodes: episodes per individual (``E``), averaged.
        hidden_sizes: hidden widths of the tanh policy (actions in [-1, 1], Playground's range).
        descriptors: ``sparsity``, ``disconnected_fraction``, ``layer_density``, ``final_xy``
            and, for envs with feet (:func:`feet`), ``feet_contact``: the fraction of alive steps
            each foot touches the floor (a MuJoCo contact closer than ``contact_threshold``).
        xy_bound: ``final_xy`` lies in ``[-xy_bound, xy_bound]^2`` (clipped).
        contact_threshold: a foot touches the floor when a contact's distance is below this.
        keep_trajectories: also return observations, actions and alive flags in ``extras``.
    """

    env_name: str = "CartpoleSwingup"
    backend: str = "jax"
    episode_length: int = 200
    num_episodes: int = 1
    hidden_sizes: tuple[int, ...] = (16, 16)
    descriptors: tuple[str, ...] = ("sparsity", "disconnected_fraction")
    xy_bound: float = 5.0
    contact_threshold: float = 0.01
    keep_trajectories: bool = False

    rank_promotion = "allow"  # MJX broadcasts implicitly

    def __post_init__(self):
        owner = f"PlaygroundTask({self.env_name!r})"
        check_choice("Playground", "env", self.env_name, env_names())
        check_choice("Playground", "backend", self.backend, BACKENDS)
        if self.backend == "warp" and jax.default_backend() != "gpu":
            raise ValueError(
                f"{owner}: backend 'warp' (MuJoCo Warp) needs an NVIDIA GPU; "
                f"this JAX runs on {jax.default_backend()}: use backend 'jax'"
            )
        check_episodes(owner, self.episode_length, self.num_episodes)
        if not float(self.xy_bound) > 0:
            raise ValueError(f"{owner}: xy_bound must be > 0, got {self.xy_bound}")
        object.__setattr__(self, "hidden_sizes", tuple(int(h) for h in self.hidden_sizes))
        names = descriptors_lib.validate(self.descriptors, self._context(with_spec=False), owner)
        object.__setattr__(self, "descriptors", names)

    @property
    def env(self):
        """The (cached) Playground env."""
        return make_env(self.env_name, self.backend)

    @property
    def spec(self) -> MLPSpec:
        return _spec(self.env_name, self.backend, self.hidden_sizes)

    def _context(self, with_spec: bool = True) -> descriptors_lib.DescriptorContext:
        labels = feet(self.env_name, self.backend)[0]
        capabilities = {descriptors_lib.SPEC, descriptors_lib.ROLLOUT}
        if labels:
            capabilities.add(descriptors_lib.FEET)
        return descriptors_lib.DescriptorContext(
            capabilities=frozenset(capabilities),
            spec=self.spec if with_spec else None,
            feet=labels,
            xy_bound=float(self.xy_bound),
        )

    # ----- one episode (EpisodeTask) -----------------------------------------------------------
    def _last(self, state) -> dict:
        return {"final_xy": state.data.xpos[1, :2].astype(jnp.float32)}

    def view_model(self):
        return self.env.mj_model

    def _view(self, state) -> dict:
        data = state.data
        return {"qpos": data.qpos, "body_pos": data.xpos[1:], "body_quat": data.xquat[1:]}

    def _summed(self, state) -> dict:
        if "feet_contact" not in self.descriptors:
            return {}
        _, foot_ids, floor_ids = feet(self.env_name, self.backend)
        contact = state.data._impl.contact
        on_floor = jnp.isin(contact.geom, jnp.asarray(floor_ids))  # [C, 2]
        close = contact.dist < self.contact_threshold  # [C]
        touching = [
            jnp.any(
                close
                & (
                    ((contact.geom[:, 0] == foot) & on_floor[:, 1])
                    | ((contact.geom[:, 1] == foot) & on_floor[:, 0])
                )
            )
            for foot in foot_ids
        ]
        return {"feet_contact_steps": jnp.stack(touching).astype(jnp.float32)}

    def _descriptor_inputs(self, out: dict, steps: jax.Array) -> dict:
        return {"final_xy": jnp.mean(out["final_xy"], axis=1)}


__all__ = ["BACKENDS", "PlaygroundTask", "env_names", "feet", "make_env", "offline_env_names"]
