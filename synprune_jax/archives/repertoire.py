"""MAP-Elites repertoires with fixed shapes: a regular grid or a centroidal Voronoi tessellation.

An archive holds one elite per cell. Every array is pre-allocated with ``C`` rows, an empty cell
has fitness ``-inf`` and zeros everywhere else, and insertion is one scatter per leaf, so
:func:`add` and :func:`sample` compile once for a given spec and batch size.

A *spec* (:class:`GridSpec` or :class:`CVTSpec`) is a frozen, hashable dataclass: pass it as a
static argument when jitting (``jax.jit(add, static_argnums=0)``, or use :func:`jitted_add`).

Example:
    >>> import jax, jax.numpy as jnp
    >>> from synprune_jax.types import EvalResult, Population
    >>> spec = GridSpec(lower=(0.0,), upper=(1.0,), resolution=(4,))
    >>> template = Population(params={"w": jnp.zeros(3)}, masks={"w": jnp.ones(3, bool)},
    ...                       rates=jnp.zeros(2))
    >>> archive = init_archive(spec, template)
    >>> batch = jax.tree_util.tree_map(lambda leaf: jnp.stack([leaf, leaf]), template)
    >>> result = EvalResult(fitness=jnp.array([1.0, 2.0]), descriptors=jnp.array([[0.1], [0.9]]),
    ...                     extras={"density": jnp.array([0.5, 0.5])})
    >>> archive, inserted = add(spec, archive, batch, result)
    >>> inserted.tolist(), archive.fitness.tolist()
    ([True, True], [1.0, -inf, -inf, 2.0])
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from synprune_jax.types import EvalResult, Population

# Largest number of float32 elements a nearest-centroid block may hold (about 64 MiB).
_NEAREST_BLOCK_ELEMENTS = 1 << 24


def _validate_bounds(name: str, lower, upper) -> tuple[tuple[float, ...], tuple[float, ...]]:
    lower = tuple(float(value) for value in lower)
    upper = tuple(float(value) for value in upper)
    if len(lower) == 0:
        raise ValueError(f"{name}: need at least one descriptor dimension, got lower=()")
    if len(lower) != len(upper):
        raise ValueError(f"{name}: lower has {len(lower)} entries but upper has {len(upper)}")
    for dim, (low, high) in enumerate(zip(lower, upper, strict=True)):
        if not (math.isfinite(low) and math.isfinite(high)):
            raise ValueError(
                f"{name}: bounds must be finite, got lower[{dim}]={low}, upper[{dim}]={high}"
            )
        if not low < high:
            raise ValueError(
                f"{name}: need lower < upper in every dimension, got "
                f"lower[{dim}]={low} >= upper[{dim}]={high}"
            )
    return lower, upper


def _check_descriptors(descriptors: jax.Array, num_descriptors: int) -> None:
    if descriptors.ndim != 2 or descriptors.shape[1] != num_descriptors:
        raise ValueError(
            f"descriptors must have shape [B, {num_descriptors}], got {descriptors.shape}"
        )


def _nearest(centroids: jax.Array, points: jax.Array) -> jax.Array:
    """``[N]`` int32 index of the nearest centroid of ``centroids [C, D]`` (squared Euclidean;
    ties go to the lowest index) for every point of ``points [N, D]``."""
    num_cells, num_dims = centroids.shape

    def one(point):
        return jnp.argmin(jnp.sum(jnp.square(centroids - point[None, :]), axis=1)).astype(jnp.int32)

    batch_size = max(1, min(points.shape[0], _NEAREST_BLOCK_ELEMENTS // (num_cells * num_dims)))
    return jax.lax.map(one, points, batch_size=batch_size)


@dataclasses.dataclass(frozen=True)
class GridSpec:
    """A regular grid over a box of descriptor space (static, hashable).

    Cells are numbered in row-major (C) order: the last descriptor dimension varies fastest.

    Attributes:
        lower: ``D`` lower bounds.
        upper: ``D`` upper bounds (each strictly above its lower bound).
        resolution: ``D`` numbers of cells per dimension (each >= 1).

    Examples:
        >>> grid = GridSpec(lower=(0.0, 0.0), upper=(1.0, 1.0), resolution=(4, 5))
        >>> grid.num_cells, grid.num_descriptors
        (20, 2)
    """

    lower: tuple[float, ...]
    upper: tuple[float, ...]
    resolution: tuple[int, ...]

    def __post_init__(self):
        lower, upper = _validate_bounds("GridSpec", self.lower, self.upper)
        resolution = tuple(self.resolution)
        if len(resolution) != len(lower):
            raise ValueError(
                f"GridSpec: resolution has {len(resolution)} entries but there are "
                f"{len(lower)} descriptor dimensions"
            )
        for dim, cells in enumerate(resolution):
            if int(cells) != cells or cells < 1:
                raise ValueError(
                    f"GridSpec: resolution[{dim}] must be an integer >= 1, got {cells}"
                )
        object.__setattr__(self, "lower", lower)
        object.__setattr__(self, "upper", upper)
        object.__setattr__(self, "resolution", tuple(int(cells) for cells in resolution))

    @property
    def num_descriptors(self) -> int:
        """Number of descriptor dimensions ``D``."""
        return len(self.lower)

    @property
    def num_cells(self) -> int:
        """Number of cells ``C`` (product of the resolution)."""
        return math.prod(self.resolution)

    def centroids(self) -> jax.Array:
        """Cell centres, ``[C, D]`` float32, in row-major cell order."""
        axes = [
            low + (np.arange(cells) + 0.5) * (high - low) / cells
            for low, high, cells in zip(self.lower, self.upper, self.resolution, strict=True)
        ]
        grid = np.meshgrid(*axes, indexing="ij")
        return jnp.asarray(np.stack([g.reshape(-1) for g in grid], axis=1), jnp.float32)

    def cell_index(self, centroids: jax.Array, descriptors: jax.Array) -> jax.Array:
        """Cell of every descriptor, computed from the bounds.

        Descriptors outside the box are clipped into it; a value equal to the upper bound falls
        in the last cell. A NaN coordinate maps to cell 0 of that dimension (:func:`add` never
        inserts such an individual).

        Args:
            centroids: ignored (kept so that grid and CVT specs share one signature).
            descriptors: ``[B, D]``.

        Returns:
            ``[B]`` int32 cell indices in ``[0, C)``.
        """
        del centroids
        _check_descriptors(descriptors, self.num_descriptors)
        lower = jnp.asarray(self.lower, jnp.float32)
        upper = jnp.asarray(self.upper, jnp.float32)
        resolution = jnp.asarray(self.resolution, jnp.int32)
        scaled = (
            (descriptors.astype(jnp.float32) - lower[None, :])
            / (upper - lower)[None, :]
            * resolution.astype(jnp.float32)[None, :]
        )
        scaled = jnp.where(jnp.isnan(scaled), 0.0, scaled)
        # Clip in float first so that +-inf and huge values do not overflow the int cast.
        scaled = jnp.clip(scaled, 0.0, resolution.astype(jnp.float32)[None, :])
        per_dim = jnp.minimum(jnp.floor(scaled).astype(jnp.int32), resolution[None, :] - 1)
        strides = np.cumprod((self.resolution[1:] + (1,))[::-1])[::-1].astype(np.int32)
        return jnp.sum(per_dim * jnp.asarray(strides)[None, :], axis=1, dtype=jnp.int32)


@functools.partial(jax.jit, static_argnums=2)
def lloyd_kmeans(
    samples: jax.Array, initial_centroids: jax.Array, num_iterations: int
) -> jax.Array:
    """Lloyd's k-means with fixed shapes.

    Each iteration assigns every sample to its nearest centroid and moves each centroid to the
    mean of its samples; a centroid with no samples keeps its position.

    Args:
        samples: ``[N, D]`` points.
        initial_centroids: ``[C, D]`` starting centroids.
        num_iterations: number of Lloyd iterations (static).

    Returns:
        ``[C, D]`` float32 centroids.
    """
    samples = samples.astype(jnp.float32)
    num_cells = initial_centroids.shape[0]

    def iteration(_, centroids):
        assignment = _nearest(centroids, samples)
        sums = jax.ops.segment_sum(samples, assignment, num_segments=num_cells)
        counts = jax.ops.segment_sum(
            jnp.ones(samples.shape[0], jnp.float32), assignment, num_segments=num_cells
        )
        means = sums / jnp.maximum(counts, 1.0)[:, None]
        return jnp.where((counts > 0)[:, None], means, centroids)

    return jax.lax.fori_loop(0, num_iterations, iteration, initial_centroids.astype(jnp.float32))


@dataclasses.dataclass(frozen=True)
class CVTSpec:
    """A centroidal Voronoi tessellation of a box of descriptor space (static, hashable).

    The centroids come from k-means on uniform samples of the box; a descriptor belongs to the
    cell of its nearest centroid.

    Attributes:
        lower: ``D`` lower bounds.
        upper: ``D`` upper bounds (each strictly above its lower bound).
        num_cells: number of cells ``C`` (>= 1).
        num_samples: uniform samples used by k-means (>= ``num_cells``).
        num_iterations: Lloyd iterations (>= 0).
        seed: seed of the samples; the centroids are a deterministic function of the spec.

    Raises:
        ValueError: no dimension, ``lower`` and ``upper`` of different lengths, a non-finite
            bound or ``lower >= upper`` in a dimension; ``num_cells``, ``num_samples`` or
            ``num_iterations`` not an integer in its range.

    Examples:
        >>> spec = CVTSpec(lower=(0.0, 0.0), upper=(1.0, 1.0), num_cells=8, num_samples=200,
        ...                num_iterations=5)
        >>> centroids = spec.centroids()  # k-means on 200 uniform samples of the unit square
        >>> centroids.shape, centroids.dtype, spec.num_descriptors
        ((8, 2), dtype('float32'), 2)
        >>> spec.cell_index(centroids, centroids).tolist()  # each centroid is in its own cell
        [0, 1, 2, 3, 4, 5, 6, 7]
        >>> CVTSpec(lower=(0.0,), upper=(1.0,), num_cells=10, num_samples=5)
        Traceback (most recent call last):
            ...
        ValueError: CVTSpec: num_samples must be an integer >= num_cells, got 5
    """

    lower: tuple[float, ...]
    upper: tuple[float, ...]
    num_cells: int
    num_samples: int = 50_000
    num_iterations: int = 30
    seed: int = 0

    def __post_init__(self):
        lower, upper = _validate_bounds("CVTSpec", self.lower, self.upper)
        object.__setattr__(self, "lower", lower)
        object.__setattr__(self, "upper", upper)
        for name, low, low_name in (
            ("num_cells", 1, "1"),
            ("num_samples", self.num_cells, "num_cells"),
            ("num_iterations", 0, "0"),
        ):
            value = getattr(self, name)
            if int(value) != value or value < low:
                raise ValueError(f"CVTSpec: {name} must be an integer >= {low_name}, got {value}")

    @property
    def num_descriptors(self) -> int:
        """Number of descriptor dimensions ``D``."""
        return len(self.lower)

    def samples(self) -> jax.Array:
        """The uniform k-means samples, ``[num_samples, D]`` float32 (deterministic from seed)."""
        lower = jnp.asarray(self.lower, jnp.float32)
        upper = jnp.asarray(self.upper, jnp.float32)
        unit = jax.random.uniform(
            jax.random.key(self.seed), (self.num_samples, self.num_descriptors)
        )
        return lower[None, :] + unit * (upper - lower)[None, :]

    def centroids(self) -> jax.Array:
        """k-means centroids, ``[C, D]`` float32, inside the bounds.

        Starts from the first ``num_cells`` samples and runs ``num_iterations`` Lloyd steps in
        JAX (bitwise deterministic on CPU; on GPU scatter-add order may vary in the last bits).
        Not cached: :func:`init_archive` stores them in :attr:`Archive.centroids`.
        """
        samples = self.samples()
        return lloyd_kmeans(samples, samples[: self.num_cells], self.num_iterations)

    def cell_index(self, centroids: jax.Array, descriptors: jax.Array) -> jax.Array:
        """Nearest centroid of every descriptor (ties go to the lowest index).

        Args:
            centroids: ``[C, D]`` (normally ``archive.centroids``).
            descriptors: ``[B, D]``.

        Returns:
            ``[B]`` int32 cell indices in ``[0, C)``. A NaN descriptor maps to cell 0
            (:func:`add` never inserts it).
        """
        _check_descriptors(descriptors, self.num_descriptors)
        return _nearest(centroids.astype(jnp.float32), descriptors.astype(jnp.float32))


ArchiveSpec = GridSpec | CVTSpec


class Archive(struct.PyTreeNode):
    """A MAP-Elites repertoire with ``C`` pre-allocated cells.

    Attributes:
        genomes: the elites; every leaf ``[C, ...]``. Empty cells hold zeros (masks ``False``).
        fitness: ``[C]`` float32; ``-inf`` marks an empty cell.
        descriptors: ``[C, D]`` float32, each elite's own descriptors (0 when empty).
        density: ``[C]`` float32, each elite's mask density (0 when empty).
        centroids: ``[C, D]`` float32 cell centres (grid) or k-means centroids (CVT).

    :func:`init_archive` makes an empty one, :func:`add` inserts a batch, :func:`sample` draws
    parents and :func:`elites` lists the filled cells on the host.

    Examples:
        >>> spec = GridSpec(lower=(0.0,), upper=(1.0,), resolution=(4,))
        >>> template = Population(params={"w": jnp.zeros(3)}, masks={"w": jnp.ones(3, bool)},
        ...                       rates=jnp.zeros(2))  # one individual
        >>> archive = init_archive(spec, template)
        >>> archive.num_cells, archive.genomes.params["w"].shape, archive.genomes.rates.shape
        (4, (4, 3), (4, 2))
        >>> archive.filled.tolist(), archive.centroids[:, 0].tolist()
        ([False, False, False, False], [0.125, 0.375, 0.625, 0.875])
    """

    genomes: Population
    fitness: jax.Array
    descriptors: jax.Array
    density: jax.Array
    centroids: jax.Array

    @property
    def filled(self) -> jax.Array:
        """``[C]`` bool, True where the cell holds an elite."""
        return self.fitness > -jnp.inf

    @property
    def num_cells(self) -> int:
        """Number of cells ``C`` (static)."""
        return int(self.fitness.shape[0])


def init_archive(spec: ArchiveSpec, template: Population) -> Archive:
    """An empty archive: genome leaves zeros ``[C, *leaf.shape]``, fitness ``-inf``,
    descriptors and density 0.

    Args:
        spec: grid or CVT spec (computes the centroids; for a CVT this runs k-means).
        template: ONE individual (no population axis; ``rates`` has shape ``[2]``), used only for
            the structure, shapes and dtypes of the genome.
    """
    if jnp.ndim(template.rates) != 1:
        raise ValueError(
            f"template must be one individual (rates of shape [2]), got rates of "
            f"shape {jnp.shape(template.rates)}; pass population[0]"
        )
    num_cells = spec.num_cells
    centroids = spec.centroids()
    genomes = jax.tree_util.tree_map(
        lambda leaf: jnp.zeros((num_cells, *jnp.shape(leaf)), jnp.asarray(leaf).dtype), template
    )
    return Archive(
        genomes=genomes,
        fitness=jnp.full((num_cells,), -jnp.inf, jnp.float32),
        descriptors=jnp.zeros((num_cells, spec.num_descriptors), jnp.float32),
        density=jnp.zeros((num_cells,), jnp.float32),
        centroids=centroids,
    )


# Batches with at most this many (candidate, rival) pairs per archive cell compare every pair
# instead of scattering into [C] arrays (benchmarks/engine_overhead.py: faster below it on CPU).
_PAIRWISE_PAIRS_PER_CELL = 4


def _batch_winners(
    cells: jax.Array, fitness: jax.Array, valid: jax.Array, num_cells: int
) -> jax.Array:
    """``[B]`` bool: the valid individual of highest fitness in its cell, ties to the lowest
    batch index (rule 2 of :func:`add`). ``cells`` holds the sentinel ``num_cells`` where
    invalid, ``fitness`` is finite where valid.

    Small batches compare all ``B^2`` pairs (no ``[C]`` temporaries); large ones scatter the
    best fitness, then the lowest index among the best, into ``[C]`` arrays. Same result.
    """
    batch_size = fitness.shape[0]
    batch_index = jnp.arange(batch_size, dtype=jnp.int32)
    if batch_size * batch_size <= _PAIRWISE_PAIRS_PER_CELL * num_cells:
        rival = (cells[None, :] == cells[:, None]) & valid[None, :]
        beats = (fitness[None, :] > fitness[:, None]) | (
            (fitness[None, :] == fitness[:, None]) & (batch_index[None, :] < batch_index[:, None])
        )
        return valid & ~jnp.any(rival & beats, axis=1)
    best = jnp.full((num_cells,), -jnp.inf, jnp.float32).at[cells].max(fitness, mode="drop")
    is_best = valid & (fitness == best[jnp.minimum(cells, num_cells - 1)])
    winner_index = (
        jnp.full((num_cells,), batch_size, jnp.int32)
        .at[cells]
        .min(jnp.where(is_best, batch_index, batch_size), mode="drop")
    )
    return valid & (winner_index[jnp.minimum(cells, num_cells - 1)] == batch_index)


def add(
    spec: ArchiveSpec, archive: Archive, genomes: Population, result: EvalResult
) -> tuple[Archive, jax.Array]:
    """Inserts a batch into the archive (fixed shapes, one scatter per leaf).

    Rules, in order:

    1. An individual is *invalid* if its fitness or any descriptor is NaN or +-inf; it never
       enters.
    2. Valid individuals that map to the same cell compete: the highest fitness wins, a tie goes
       to the lowest batch index.
    3. A batch winner replaces the cell's current elite only if its fitness is **strictly**
       greater (an equal fitness keeps the incumbent; an empty cell has ``-inf``).

    Args:
        spec: the spec the archive was built with (static under jit).
        archive: current archive with ``C`` cells.
        genomes: ``B`` individuals; every leaf ``[B, ...]``, same structure as the archive's.
        result: their evaluation: ``fitness [B]``, ``descriptors [B, D]`` and
            ``extras["density"] [B]`` (the stored mask density).

    Returns:
        ``(new_archive, inserted)`` where ``inserted`` is ``[B]`` bool, True exactly for the
        individuals now stored.
    """
    if "density" not in result.extras:
        raise KeyError(
            "add() reads each individual's mask density from result.extras['density'] "
            f"([B]); extras has keys {sorted(result.extras)}"
        )
    num_cells = archive.num_cells
    fitness = jnp.asarray(result.fitness, jnp.float32)
    descriptors = jnp.asarray(result.descriptors, jnp.float32)
    density = jnp.asarray(result.extras["density"], jnp.float32)
    batch_size = fitness.shape[0]
    if fitness.shape != (batch_size,) or density.shape != (batch_size,):
        raise ValueError(
            f"fitness and extras['density'] must have shape [B], got "
            f"{fitness.shape} and {density.shape}"
        )
    _check_descriptors(descriptors, spec.num_descriptors)
    if descriptors.shape[0] != batch_size:
        raise ValueError(
            f"descriptors have {descriptors.shape[0]} rows for {batch_size} fitness values"
        )

    valid = jnp.isfinite(fitness) & jnp.all(jnp.isfinite(descriptors), axis=1)
    cells = spec.cell_index(archive.centroids, descriptors)
    candidate_cells = jnp.where(valid, cells, num_cells)  # sentinel C: dropped by every scatter
    candidate_fitness = jnp.where(valid, fitness, -jnp.inf)

    winner = _batch_winners(candidate_cells, candidate_fitness, valid, num_cells)
    inserted = winner & (fitness > archive.fitness[cells])

    # Each cell has at most one inserted individual, so the scatters are unambiguous.
    target = jnp.where(inserted, cells, num_cells)
    new_genomes = jax.tree_util.tree_map(
        lambda stored, new: stored.at[target].set(new.astype(stored.dtype), mode="drop"),
        archive.genomes,
        genomes,
    )
    new_archive = archive.replace(
        genomes=new_genomes,
        fitness=archive.fitness.at[target].set(fitness, mode="drop"),
        descriptors=archive.descriptors.at[target].set(descriptors, mode="drop"),
        density=archive.density.at[target].set(density, mode="drop"),
    )
    return new_archive, inserted


def inclusive_count(flags: jax.Array) -> jax.Array:
    """``[C]`` int32 running count of True entries of ``flags [C]`` (``jnp.cumsum``'s values).

    Computed as two small matrix products over a ``[R, W]`` tiling (``W = ceil(sqrt(C))``):
    within-row counts ``x @ triu(1)`` and row offsets ``tril(1, -1) @ row_totals``, at
    ``Precision.HIGHEST`` and exact (0/1 inputs, totals below ``2**24``). On CPU this is 2-4x
    faster than ``jnp.cumsum``'s associative scan for the archive sizes used here
    (``benchmarks/engine_overhead.py``); above ``W = 256`` it falls back to ``jnp.cumsum``.

    Example:
        >>> inclusive_count(jnp.array([True, False, True, True])).tolist()
        [1, 1, 2, 3]
    """
    size = flags.shape[0]
    width = math.isqrt(max(size - 1, 0)) + 1
    if width > 256 or size >= 1 << 24:
        return jnp.cumsum(flags, dtype=jnp.int32)
    rows = -(-size // width)
    tiles = jnp.pad(flags.astype(jnp.float32), (0, rows * width - size)).reshape(rows, width)
    highest = jax.lax.Precision.HIGHEST
    within = jnp.matmul(tiles, jnp.triu(jnp.ones((width, width), jnp.float32)), precision=highest)
    offsets = jnp.matmul(
        jnp.tril(jnp.ones((rows, rows), jnp.float32), -1), within[:, -1], precision=highest
    )
    return (within + offsets[:, None]).reshape(-1)[:size].astype(jnp.int32)


def sample_indices(key: jax.Array, archive: Archive, num: int) -> jax.Array:
    """Cells drawn uniformly, with replacement, among the filled ones.

    Args:
        key: PRNG key.
        archive: archive with ``C`` cells.
        num: number of draws (static).

    Returns:
        ``[num]`` int32 cell indices: draw ``d ~ randint(0, n)`` (``n`` filled cells) picks the
        ``d``-th filled cell in ascending order. If the archive is empty the draws are uniform
        over all ``C`` cells (which hold zero genomes): seed the archive before sampling from it.

    Cost is ``O(C + num)``: the filled cells are listed once (:func:`inclusive_count` and one
    scatter), then each draw is one integer and one gather.
    """
    filled = archive.filled
    num_cells = filled.shape[0]
    num_filled = jnp.sum(filled, dtype=jnp.int32)
    any_filled = num_filled > 0
    # The filled cells in ascending order (jnp.nonzero's values, without its cumsum).
    rank = jnp.where(filled, inclusive_count(filled) - 1, num_cells)
    cells = jnp.arange(num_cells, dtype=jnp.int32)
    filled_cells = (
        jnp.zeros((num_cells,), jnp.int32).at[rank].set(cells, mode="drop", unique_indices=True)
    )
    table = jnp.where(any_filled, filled_cells, cells)
    upper = jnp.where(any_filled, num_filled, num_cells)
    draws = jax.random.randint(key, (num,), 0, upper, dtype=jnp.int32)
    return table[draws]


def sample(key: jax.Array, archive: Archive, num: int) -> Population:
    """Parents drawn uniformly, with replacement, among the filled cells.

    Args:
        key: PRNG key.
        archive: archive with ``C`` cells.
        num: number of parents (static).

    Returns:
        A :class:`Population` with every leaf ``[num, ...]``. If the archive is empty it holds
        zero genomes (all-``False`` masks, zero rates); see :func:`sample_indices`.
    """
    indices = sample_indices(key, archive, num)
    return jax.tree_util.tree_map(lambda leaf: leaf[indices], archive.genomes)


jitted_add = jax.jit(add, static_argnums=0)
"""``jax.jit(add, static_argnums=0)``: :func:`add` compiled per (spec, shapes)."""

jitted_sample = jax.jit(sample, static_argnums=2)
"""``jax.jit(sample, static_argnums=2)``: :func:`sample` compiled per (num, shapes)."""


def elites(archive: Archive) -> dict:
    """Host helper: the filled cells as NumPy arrays (not jittable).

    Returns:
        Dict with ``"cells"`` ``[K]`` int64 (filled cell indices, ascending), ``"genomes"``
        (a :class:`Population` of NumPy leaves ``[K, ...]``), ``"fitness"`` ``[K]``,
        ``"descriptors"`` ``[K, D]`` and ``"density"`` ``[K]``.
    """
    cells = np.flatnonzero(np.asarray(archive.filled))
    return {
        "cells": cells,
        "genomes": jax.tree_util.tree_map(lambda leaf: np.asarray(leaf)[cells], archive.genomes),
        "fitness": np.asarray(archive.fitness)[cells],
        "descriptors": np.asarray(archive.descriptors)[cells],
        "density": np.asarray(archive.density)[cells],
    }
