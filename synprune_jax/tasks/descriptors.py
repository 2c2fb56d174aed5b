"""Behaviour descriptors, selectable by name.

A task is built with a tuple of descriptor names (e.g. ``("sparsity", "disconnected_fraction")``).
Each name expands to one or more descriptor columns; the task concatenates them into the
``[P, D]`` ``EvalResult.descriptors`` array. Every descriptor has fixed bounds so a grid archive
can be laid out before anything runs; values are clipped into those bounds.

Registry (:data:`DESCRIPTORS`; each entry's ``doc`` says what its columns mean): the mask-based
``sparsity``, ``disconnected_fraction`` and ``layer_density`` (one column per kernel) need an
:class:`MLPSpec`; ``final_xy`` (clipped to ``[-xy_bound, xy_bound]``) needs a Brax rollout,
``feet_contact`` (one column per foot) a Brax env with feet, ``end_effector`` the kinematic arm,
``final_end_effector`` and ``obstacle_distance`` the reach-and-avoid arm.

Names are validated (:func:`validate`) when a task is constructed, before anything is traced or
compiled; an unknown or unsupported name raises ``ValueError`` listing the names valid *for that
task*. Every ``compute`` function works on **one individual** (tasks ``vmap`` it).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from synprune_jax import masks as masks_lib
from synprune_jax.networks import MLPSpec

# Capabilities a task can offer (see DescriptorContext.capabilities).
SPEC = "spec"
ROLLOUT = "rollout"
FEET = "feet"
END_EFFECTOR = "end_effector"
REACH = "reach"


@dataclasses.dataclass(frozen=True)
class DescriptorContext:
    """Static facts about a task that descriptors need (hashable).

    Attributes:
        capabilities: which inputs the task can provide: any of ``"spec"``, ``"rollout"``,
            ``"feet"``, ``"end_effector"``, ``"reach"``.
        spec: the task's network, if any (required by mask-based descriptors).
        feet: labels of the feet (one ``feet_contact`` column each).
        xy_bound: half-width of the ``final_xy`` / ``final_end_effector`` bounds, and the upper
            bound of ``obstacle_distance`` (the reach arm's length).
        dims: coordinates of ``final_end_effector`` (the reach arm: 2 or 3).
    """

    capabilities: frozenset = frozenset()
    spec: MLPSpec | None = None
    feet: tuple[str, ...] = ()
    xy_bound: float = 5.0
    dims: int = 2

    @property
    def network(self) -> MLPSpec:
        """``spec`` for the mask-based descriptors (their ``"spec"`` requirement is checked when
        the descriptors are chosen, so it is set here)."""
        if self.spec is None:
            raise ValueError("a mask-based descriptor needs a task with an MLP network")
        return self.spec


# compute(context, inputs) -> [k] float32, for one individual. ``inputs`` keys:
#   "masks" (the individual's masks), "final_xy" [2], "feet_contact" [F], "end_effector" [2],
#   "final_end_effector" [2 or 3], "obstacle_distance" [] (the reach arm).
ComputeFn = Callable[[DescriptorContext, Mapping[str, jax.Array]], jax.Array]


@dataclasses.dataclass(frozen=True)
class Descriptor:
    """One registry entry.

    Attributes:
        name: registry name.
        requires: the capability a task must offer for this descriptor to be valid.
        columns: ``context -> tuple of column names``.
        bounds: ``context -> (lower [k], upper [k])`` numpy float32.
        compute: ``(context, inputs) -> [k]`` float32 for one individual.
        doc: one-line description.
    """

    name: str
    requires: str
    columns: Callable[[DescriptorContext], tuple[str, ...]]
    bounds: Callable[[DescriptorContext], tuple[np.ndarray, np.ndarray]]
    compute: ComputeFn
    doc: str


def _unit_bounds(k: int) -> tuple[np.ndarray, np.ndarray]:
    return np.zeros((k,), np.float32), np.ones((k,), np.float32)


# ----- mask-based ----------------------------------------------------------------------------


def _sparsity(context: DescriptorContext, inputs: Mapping[str, jax.Array]) -> jax.Array:
    # Counted in integers so a full network gives exactly 0 (1 - density can round below 0).
    maskable = context.network.maskable()
    total = masks_lib.count_maskable(inputs["masks"], maskable)
    inactive = total - masks_lib.count_active(inputs["masks"], maskable)
    return jnp.reshape(inactive.astype(jnp.float32) / total, (1,))


def _disconnected_fraction(context: DescriptorContext, inputs) -> jax.Array:
    stats = masks_lib.mask_statistics(context.network, inputs["masks"])
    return jnp.clip(jnp.reshape(stats.disconnected_fraction, (1,)), 0.0, 1.0)


def _layer_density(context: DescriptorContext, inputs) -> jax.Array:
    return jnp.clip(
        masks_lib.mask_statistics(context.network, inputs["masks"]).layer_density, 0.0, 1.0
    )


# ----- behaviour-based -----------------------------------------------------------------------


def _final_xy_bounds(context: DescriptorContext) -> tuple[np.ndarray, np.ndarray]:
    bound = float(context.xy_bound)
    return np.full((2,), -bound, np.float32), np.full((2,), bound, np.float32)


def _final_xy(context: DescriptorContext, inputs) -> jax.Array:
    return jnp.clip(inputs["final_xy"], -context.xy_bound, context.xy_bound)


def _feet_contact(context: DescriptorContext, inputs) -> jax.Array:
    return jnp.clip(inputs["feet_contact"], 0.0, 1.0)


def _end_effector(context: DescriptorContext, inputs) -> jax.Array:
    return jnp.clip(inputs["end_effector"], 0.0, 1.0)


def _final_end_effector(context: DescriptorContext, inputs) -> jax.Array:
    return jnp.clip(inputs["final_end_effector"], -context.xy_bound, context.xy_bound)


def _obstacle_distance(context: DescriptorContext, inputs) -> jax.Array:
    return jnp.clip(jnp.reshape(inputs["obstacle_distance"], (1,)), 0.0, context.xy_bound)


DESCRIPTORS: dict[str, Descriptor] = {
    d.name: d
    for d in (
        Descriptor(
            "sparsity",
            SPEC,
            lambda c: ("sparsity",),
            lambda c: _unit_bounds(1),
            _sparsity,
            "1 - density of the maskable parameters",
        ),
        Descriptor(
            "disconnected_fraction",
            SPEC,
            lambda c: ("disconnected_fraction",),
            lambda c: _unit_bounds(1),
            _disconnected_fraction,
            "fraction of hidden/output units with no active incoming connection",
        ),
        Descriptor(
            "layer_density",
            SPEC,
            lambda c: tuple(f"layer_density_{i}" for i in range(c.network.num_layers)),
            lambda c: _unit_bounds(c.network.num_layers),
            _layer_density,
            "density of each kernel",
        ),
        Descriptor(
            "final_xy",
            ROLLOUT,
            lambda c: ("final_x", "final_y"),
            _final_xy_bounds,
            _final_xy,
            "torso (x, y) at the last alive step",
        ),
        Descriptor(
            "feet_contact",
            FEET,
            lambda c: tuple(f"feet_contact_{foot}" for foot in c.feet),
            lambda c: _unit_bounds(len(c.feet)),
            _feet_contact,
            "fraction of alive steps each foot touches the ground",
        ),
        Descriptor(
            "end_effector",
            END_EFFECTOR,
            lambda c: ("end_effector_x", "end_effector_y"),
            lambda c: _unit_bounds(2),
            _end_effector,
            "kinematic arm tip (x, y) mapped to [0, 1]",
        ),
        Descriptor(
            "final_end_effector",
            REACH,
            lambda c: tuple(f"final_end_effector_{axis}" for axis in "xyz"[: c.dims]),
            lambda c: (
                np.full((c.dims,), -c.xy_bound, np.float32),
                np.full((c.dims,), c.xy_bound, np.float32),
            ),
            _final_end_effector,
            "reach arm tip (x, y[, z]) at the last alive step",
        ),
        Descriptor(
            "obstacle_distance",
            REACH,
            lambda c: ("obstacle_distance",),
            lambda c: (np.zeros((1,), np.float32), np.full((1,), c.xy_bound, np.float32)),
            _obstacle_distance,
            "smallest clearance between the reach arm's links and an obstacle over the "
            "episode (0: touched)",
        ),
    )
}


def available(context: DescriptorContext) -> tuple[str, ...]:
    """Descriptor names valid for a task with this context, in registry order."""
    return tuple(name for name, d in DESCRIPTORS.items() if d.requires in context.capabilities)


def validate(names, context: DescriptorContext, owner: str = "this task") -> tuple[str, ...]:
    """``names`` (a sequence; a single string is rejected) as a tuple, checked against the
    task's ``context`` (cheap: no tracing, no compiling); ``owner`` names the task in errors.

    Raises:
        ValueError: empty, duplicated, unknown or unsupported names; the message lists the valid
            names for this task.
    """
    if isinstance(names, str):
        raise ValueError(f"descriptors must be a sequence of names, not the string {names!r}")
    names = tuple(names)
    valid = available(context)
    if not names:
        raise ValueError(f"at least one descriptor is needed for {owner}; valid: {list(valid)}")
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate descriptor names {list(names)} for {owner}")
    for name in names:
        if name not in valid:
            reason = (
                "unknown descriptor"
                if name not in DESCRIPTORS
                else (f"descriptor not supported (needs {DESCRIPTORS[name].requires!r})")
            )
            raise ValueError(f"{reason} {name!r} for {owner}; valid: {list(valid)}")
    return names


def column_names(names, context: DescriptorContext) -> tuple[str, ...]:
    """One name per descriptor column."""
    return tuple(col for name in names for col in DESCRIPTORS[name].columns(context))


def bounds(names, context: DescriptorContext) -> tuple[np.ndarray, np.ndarray]:
    """``(lower [D], upper [D])`` float32 numpy arrays."""
    pairs = [DESCRIPTORS[name].bounds(context) for name in names]
    return (
        np.concatenate([p[0] for p in pairs]).astype(np.float32),
        np.concatenate([p[1] for p in pairs]).astype(np.float32),
    )


def compute(names, context: DescriptorContext, inputs: Mapping[str, jax.Array]) -> jax.Array:
    """Descriptor vector ``[D]`` float32 of one individual (vmap for a population)."""
    parts = [
        jnp.reshape(DESCRIPTORS[name].compute(context, inputs), (-1,)).astype(jnp.float32)
        for name in names
    ]
    return jnp.concatenate(parts)
