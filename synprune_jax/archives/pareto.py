"""Pareto fronts: non-dominated sorting, crowding distance, padded fronts, exact hypervolume.

Every objective is **maximised** (the project's one convention). Rows whose objectives are not
all finite are *invalid*: they never dominate and get the sentinel rank ``P`` (worse than any
real front). Everything is jittable (fixed shapes) except the host-side (numpy) exact
:func:`hypervolume`; ``docs/mo_transfer.md`` ("Pareto utilities") lists the functions.

Example:
    >>> import numpy as np
    >>> points = np.array([[1.0, 0.0], [0.5, 0.5], [0.0, 1.0]])
    >>> float(hypervolume(points, reference=np.zeros(2)))
    0.25
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct


def valid_rows(objectives: jax.Array) -> jax.Array:
    """``[P, M] -> [P]`` bool: every objective finite."""
    return jnp.all(jnp.isfinite(objectives), axis=-1)


def dominance_matrix(objectives: jax.Array) -> jax.Array:
    """``D[i, j]`` is True when point ``i`` Pareto-dominates point ``j`` (maximisation).

    Args:
        objectives: ``[P, M]`` float.

    Returns:
        ``[P, P]`` bool; invalid rows neither dominate nor are dominated.
    """
    if objectives.ndim != 2:
        raise ValueError(f"objectives must have shape [P, M], got {objectives.shape}")
    left = objectives[:, None, :]
    right = objectives[None, :, :]
    dominates = jnp.all(left >= right, axis=-1) & jnp.any(left > right, axis=-1)
    valid = valid_rows(objectives)
    return dominates & valid[:, None] & valid[None, :]


def non_dominated_rank(objectives: jax.Array) -> jax.Array:
    """Front index of every point (fast non-dominated sorting, jittable).

    Args:
        objectives: ``[P, M]`` float, maximised.

    Returns:
        ``[P]`` int32: 0 for the non-dominated points, 1 for those dominated only by front 0, ...;
        invalid (non-finite) rows get ``P``.

    Examples:
        >>> non_dominated_rank(jnp.array([[1.0, 1.0], [2.0, 0.0], [0.5, 0.5], [0.0, 0.0]]))
        Array([0, 0, 1, 2], dtype=int32)
    """
    num_points = objectives.shape[0]
    dominates = dominance_matrix(objectives)
    valid = valid_rows(objectives)
    rank = jnp.full((num_points,), num_points, jnp.int32)

    def condition(carry):
        _, _, assigned = carry
        return ~jnp.all(assigned)

    def body(carry):
        rank, current, assigned = carry
        dominators = jnp.sum(dominates & ~assigned[:, None], axis=0)
        new = ~assigned & (dominators == 0)
        return jnp.where(new, current, rank), current + 1, assigned | new

    rank, _, _ = jax.lax.while_loop(condition, body, (rank, jnp.int32(0), ~valid))
    return rank


def crowding_distance(objectives: jax.Array, ranks: jax.Array) -> jax.Array:
    """NSGA-II crowding distance, computed within each front (jittable).

    For each objective the points of a front are sorted; the two boundary points get ``inf``,
    an interior point adds ``(next - previous) / (front max - front min)`` (0 when the front is
    flat in that objective). A front of one or two points is all boundary.

    Args:
        objectives: ``[P, M]`` float.
        ranks: ``[P]`` int, from :func:`non_dominated_rank` (values in ``[0, P]``).

    Returns:
        ``[P]`` float32, ``0`` for invalid rows.

    Examples:
        >>> objectives = jnp.array([[0.0, 2.0], [1.0, 1.0], [2.0, 0.0]])
        >>> crowding_distance(objectives, non_dominated_rank(objectives))  # the ends: inf
        Array([inf,  2., inf], dtype=float32)
    """
    num_points, num_objectives = objectives.shape
    valid = valid_rows(objectives)
    clean = jnp.where(valid[:, None], objectives, 0.0).astype(jnp.float32)
    ranks = ranks.astype(jnp.int32)

    def per_objective(values):
        order = jnp.lexsort((values, ranks))
        sorted_ranks = ranks[order]
        sorted_values = values[order]
        false = jnp.zeros((1,), bool)
        has_previous = jnp.concatenate([false, sorted_ranks[1:] == sorted_ranks[:-1]])
        has_next = jnp.concatenate([sorted_ranks[:-1] == sorted_ranks[1:], false])
        previous = jnp.concatenate([sorted_values[:1], sorted_values[:-1]])
        following = jnp.concatenate([sorted_values[1:], sorted_values[-1:]])
        low = jax.ops.segment_min(sorted_values, sorted_ranks, num_segments=num_points + 1)
        high = jax.ops.segment_max(sorted_values, sorted_ranks, num_segments=num_points + 1)
        span = (high - low)[sorted_ranks]
        gap = jnp.where(span > 0, (following - previous) / jnp.where(span > 0, span, 1.0), 0.0)
        distance = jnp.where(has_previous & has_next, gap, jnp.inf)
        return jnp.zeros((num_points,), jnp.float32).at[order].set(distance)

    total = jnp.sum(jax.vmap(per_objective, in_axes=1, out_axes=1)(clean), axis=1)
    return jnp.where(valid, total, 0.0)


def survival_order(ranks: jax.Array, crowding: jax.Array) -> jax.Array:
    """``[P]`` indices from best to worst: rank ascending, then crowding descending, then index."""
    return jnp.lexsort((-crowding, ranks))


class ParetoFront(struct.PyTreeNode):
    """A first front in fixed-capacity arrays (a pytree; :func:`padded_front` builds it).

    ``K`` is the capacity, ``M`` the number of objectives and ``L`` the genome length. The
    members come first, in survival order (front boundary points first, then by decreasing
    crowding distance); each objective vector appears once.

    Attributes:
        objectives: ``[K, M]`` float32 (maximised); padding rows hold ``-inf``.
        genomes: ``[K, L]`` bool masks of the members; padding rows are all False.
        valid: ``[K]`` bool, True for real members (they come first).

    Examples:
        >>> objectives = jnp.array([[1.0, 0.0], [0.5, 0.5], [0.0, 1.0], [0.2, 0.2], [1.0, 0.0]])
        >>> genomes = jnp.array([[1, 0], [1, 1], [0, 1], [0, 0], [1, 0]], bool)
        >>> front = jax.jit(padded_front, static_argnames="capacity")(
        ...     objectives, genomes, capacity=4
        ... )  # [0.2, 0.2] is dominated, the second [1, 0] a duplicate
        >>> front.valid.tolist()
        [True, True, True, False]
        >>> front.objectives.tolist()  # the two ends (crowding inf) first, then the middle
        [[1.0, 0.0], [0.0, 1.0], [0.5, 0.5], [-inf, -inf]]
        >>> front.genomes.tolist()
        [[True, False], [False, True], [True, True], [False, False]]
    """

    objectives: jax.Array
    genomes: jax.Array
    valid: jax.Array


def padded_front(objectives: jax.Array, genomes: jax.Array, capacity: int) -> ParetoFront:
    """The non-dominated points of a population, best-spread first, padded to ``capacity``.

    Duplicated objective vectors are kept once (the first occurrence in survival order).
    When the front is larger than ``capacity`` the most crowded members are dropped.

    Args:
        objectives: ``[P, M]`` float.
        genomes: ``[P, L]`` bool.
        capacity: ``K``, a static int.

    Returns:
        :class:`ParetoFront` with ``[K, ...]`` arrays.
    """
    ranks = non_dominated_rank(objectives)
    crowding = crowding_distance(objectives, ranks)
    order = survival_order(ranks, crowding)
    sorted_objectives = objectives[order]
    # a duplicate equals an earlier row of the sorted order
    equal = jnp.all(sorted_objectives[:, None, :] == sorted_objectives[None, :, :], axis=-1)
    earlier = jnp.tril(jnp.ones(equal.shape, bool), k=-1)
    duplicate = jnp.any(equal & earlier, axis=1)
    keep = (ranks[order] == 0) & ~duplicate
    position = jnp.lexsort((jnp.arange(order.shape[0]), ~keep))  # kept rows first, stable
    chosen = order[position][:capacity]
    valid = keep[position][:capacity]
    pad = capacity - chosen.shape[0]
    if pad > 0:
        chosen = jnp.concatenate([chosen, jnp.zeros((pad,), chosen.dtype)])
        valid = jnp.concatenate([valid, jnp.zeros((pad,), bool)])
    front_objectives = jnp.where(valid[:, None], objectives[chosen], -jnp.inf)
    front_genomes = genomes[chosen] & valid[:, None]
    return ParetoFront(
        objectives=front_objectives.astype(jnp.float32), genomes=front_genomes, valid=valid
    )


# ----- host: exact hypervolume -------------------------------------------------------------------


def non_dominated_numpy(points: np.ndarray) -> np.ndarray:
    """``[N, M] -> [N]`` bool, True for the points no other point dominates (maximisation)."""
    points = np.asarray(points, np.float64)
    if points.shape[0] == 0:
        return np.zeros((0,), bool)
    left = points[:, None, :]
    right = points[None, :, :]
    dominated_by = np.all(left >= right, axis=-1) & np.any(left > right, axis=-1)
    return ~np.any(dominated_by, axis=0)


def _hv_minimise(points: np.ndarray, reference: np.ndarray) -> float:
    """Volume dominated by ``points`` (all strictly below ``reference``), minimisation."""
    count, num_objectives = points.shape
    if count == 0:
        return 0.0
    if num_objectives == 1:
        return float(reference[0] - points[:, 0].min())
    if num_objectives == 2:
        order = np.lexsort((points[:, 1], points[:, 0]))
        volume, best = 0.0, reference[1]
        for x, y in points[order]:
            if y < best:
                volume += (reference[0] - x) * (best - y)
                best = y
        return float(volume)
    order = np.argsort(points[:, -1], kind="stable")
    points = points[order]
    volume = 0.0
    for index in range(count):
        upper = points[index + 1, -1] if index + 1 < count else reference[-1]
        depth = upper - points[index, -1]
        if depth <= 0:
            continue
        section = points[: index + 1, :-1]
        section = section[non_dominated_numpy(-section)]
        volume += depth * _hv_minimise(section, reference[:-1])
    return float(volume)


def hypervolume(points, reference) -> float:
    """Exact hypervolume dominated by ``points`` above ``reference`` (maximisation, any ``M``).

    Points that do not strictly exceed the reference in every objective add nothing and are
    dropped; non-finite rows are ignored. The algorithm slices along the last objective
    (Hypervolume by Slicing Objectives), keeping only non-dominated points at every level, with
    an ``O(N log N)`` sweep for two objectives.

    Args:
        points: ``[N, M]`` objective vectors.
        reference: ``[M]`` reference point (a lower bound of interest).

    Returns:
        The hypervolume as a Python float (0.0 for no point).

    Examples:
        >>> hypervolume([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]], [0.0, 0.0])  # maximised objectives
        0.25
    """
    points = np.asarray(points, np.float64)
    reference = np.asarray(reference, np.float64).reshape(-1)
    if points.ndim != 2 or points.shape[1] != reference.shape[0]:
        raise ValueError(
            f"points [N, M] and reference [M] disagree: {points.shape}, {reference.shape}"
        )
    points = points[np.all(np.isfinite(points), axis=1)]
    points = points[np.all(points > reference, axis=1)]
    if points.shape[0] == 0:
        return 0.0
    points = np.unique(points, axis=0)
    points = points[non_dominated_numpy(points)]
    return _hv_minimise(-points, -reference)
