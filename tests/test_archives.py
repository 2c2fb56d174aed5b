"""Tests of the MAP-Elites archives and QD metrics (tiny shapes, CPU-fast)."""

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from synprune_jax.archives import (
    Archive,
    CVTSpec,
    GridSpec,
    add,
    elites,
    inclusive_count,
    init_archive,
    jitted_add,
    jitted_sample,
    lloyd_kmeans,
    qd_metrics,
    sample,
    sample_indices,
)
from synprune_jax.types import EvalResult, Population

jax.config.update("jax_numpy_rank_promotion", "raise")

NAN = math.nan
INF = math.inf


def make_population(ids) -> Population:
    """``B`` individuals; individual ``i`` has ``w = [ids[i], ids[i] + 0.5, -ids[i]]``."""
    ids = jnp.asarray(ids, jnp.float32)
    weights = jnp.stack([ids, ids + 0.5, -ids], axis=1)
    return Population(
        params={"w": weights},
        masks={"w": weights > 0.0},
        rates=jnp.stack([ids / 100.0, ids / 200.0], axis=1),
    )


def template() -> Population:
    return make_population([0.0])[0]


def make_result(fitness, descriptors, density=None) -> EvalResult:
    fitness = jnp.asarray(fitness, jnp.float32)
    if density is None:
        density = jnp.linspace(0.1, 0.9, fitness.shape[0])
    return EvalResult(
        fitness=fitness,
        descriptors=jnp.asarray(descriptors, jnp.float32),
        extras={"density": jnp.asarray(density, jnp.float32)},
    )


LINE = GridSpec(lower=(0.0,), upper=(1.0,), resolution=(4,))


# ----- GridSpec -----------------------------------------------------------------------------------


def test_grid_spec_validation():
    with pytest.raises(ValueError, match="lower has 2 entries but upper has 1"):
        GridSpec(lower=(0.0, 0.0), upper=(1.0,), resolution=(2, 2))
    with pytest.raises(ValueError, match="lower < upper"):
        GridSpec(lower=(1.0,), upper=(1.0,), resolution=(2,))
    with pytest.raises(ValueError, match="resolution has 1 entries"):
        GridSpec(lower=(0.0, 0.0), upper=(1.0, 1.0), resolution=(2,))
    with pytest.raises(ValueError, match=r"resolution\[0\] must be an integer >= 1"):
        GridSpec(lower=(0.0,), upper=(1.0,), resolution=(0,))
    with pytest.raises(ValueError, match="finite"):
        GridSpec(lower=(0.0,), upper=(INF,), resolution=(2,))


def test_grid_spec_is_hashable_and_normalised():
    spec = GridSpec(lower=[0, -1], upper=[1, 1], resolution=[2, 3])
    assert spec == GridSpec(lower=(0.0, -1.0), upper=(1.0, 1.0), resolution=(2, 3))
    assert hash(spec) == hash(GridSpec(lower=(0.0, -1.0), upper=(1.0, 1.0), resolution=(2, 3)))
    assert spec.num_cells == 6 and spec.num_descriptors == 2


def test_grid_centroids_2x3():
    spec = GridSpec(lower=(0.0, 0.0), upper=(2.0, 3.0), resolution=(2, 3))
    expected = [[0.5, 0.5], [0.5, 1.5], [0.5, 2.5], [1.5, 0.5], [1.5, 1.5], [1.5, 2.5]]
    np.testing.assert_array_equal(spec.centroids(), np.asarray(expected, np.float32))
    # Every centroid maps to its own cell.
    np.testing.assert_array_equal(spec.cell_index(None, spec.centroids()), np.arange(6))


def test_grid_cell_index_hand_picked():
    spec = GridSpec(lower=(0.0, -1.0), upper=(2.0, 2.0), resolution=(2, 3))
    points = [
        [0.0, -1.0],  # lower corner -> (0, 0)
        [2.0, 2.0],  # upper corner -> last cell (1, 2)
        [0.999, 0.0],  # (0, 1): 0.0 is the lower edge of the middle column
        [1.0, 1.0],  # (1, 2): both on inner edges, go up
        [-5.0, 0.5],  # clipped x -> (0, 1)
        [7.0, -9.0],  # clipped -> (1, 0)
        [INF, -INF],  # clipped -> (1, 0)
        [1.5, 100.0],  # clipped y -> (1, 2)
    ]
    expected = [0, 5, 1, 5, 1, 3, 3, 5]
    cells = spec.cell_index(spec.centroids(), jnp.asarray(points, jnp.float32))
    assert cells.dtype == jnp.int32
    np.testing.assert_array_equal(cells, expected)


def test_grid_cell_index_rejects_wrong_dimension():
    with pytest.raises(ValueError, match=r"shape \[B, 1\]"):
        LINE.cell_index(None, jnp.zeros((3, 2)))


# ----- CVTSpec ------------------------------------------------------------------------------------

CVT = CVTSpec(
    lower=(-1.0, 0.0), upper=(1.0, 3.0), num_cells=8, num_samples=400, num_iterations=10, seed=3
)


def quantisation_error(samples, centroids):
    distances = np.sum(
        (np.asarray(samples)[:, None, :] - np.asarray(centroids)[None, :, :]) ** 2, axis=2
    )
    return float(np.mean(np.min(distances, axis=1)))


def test_cvt_spec_validation():
    with pytest.raises(ValueError, match="num_samples must be an integer >= num_cells"):
        CVTSpec(lower=(0.0,), upper=(1.0,), num_cells=10, num_samples=5)
    with pytest.raises(ValueError, match="num_cells must be an integer >= 1"):
        CVTSpec(lower=(0.0,), upper=(1.0,), num_cells=0)
    with pytest.raises(ValueError, match="lower < upper"):
        CVTSpec(lower=(0.0,), upper=(-1.0,), num_cells=2)
    hash(CVT)


def test_cvt_centroids_inside_bounds_and_deterministic():
    centroids = np.asarray(CVT.centroids())
    assert centroids.shape == (8, 2) and centroids.dtype == np.float32
    assert np.all(centroids >= np.asarray(CVT.lower)) and np.all(centroids <= np.asarray(CVT.upper))
    np.testing.assert_array_equal(centroids, CVT.centroids())
    other = CVTSpec(
        lower=CVT.lower, upper=CVT.upper, num_cells=8, num_samples=400, num_iterations=10, seed=4
    )
    assert not np.array_equal(centroids, other.centroids())


def test_cvt_kmeans_reduces_quantisation_error():
    samples = CVT.samples()
    initial = samples[: CVT.num_cells]
    np.testing.assert_array_equal(lloyd_kmeans(samples, initial, 0), initial)
    errors = [quantisation_error(samples, lloyd_kmeans(samples, initial, n)) for n in (0, 1, 10)]
    assert errors[1] <= errors[0] + 1e-7 and errors[2] <= errors[1] + 1e-7
    assert errors[2] < 0.8 * errors[0]


def test_kmeans_empty_cluster_keeps_its_centroid():
    samples = jnp.asarray([[0.0], [0.1], [1.0], [1.1]])
    initial = jnp.asarray([[0.0], [1.0], [50.0]])  # the third centroid attracts nothing
    np.testing.assert_allclose(
        lloyd_kmeans(samples, initial, 3), [[0.05], [1.05], [50.0]], rtol=1e-6
    )


def test_cvt_cell_index_is_brute_force_nearest():
    centroids = CVT.centroids()
    descriptors = jax.random.uniform(jax.random.key(0), (64, 2), minval=-1.5, maxval=3.5)
    cells = CVT.cell_index(centroids, descriptors)
    assert cells.dtype == jnp.int32
    distances = np.sum(
        (np.asarray(descriptors)[:, None, :] - np.asarray(centroids)[None]) ** 2, axis=2
    )
    np.testing.assert_array_equal(cells, np.argmin(distances, axis=1))


# ----- init / add ---------------------------------------------------------------------------------


def test_init_archive_shapes_and_dtypes():
    archive = init_archive(GridSpec((0.0, 0.0), (1.0, 1.0), (2, 3)), template())
    assert archive.genomes.params["w"].shape == (6, 3)
    assert archive.genomes.masks["w"].dtype == jnp.bool_ and not archive.genomes.masks["w"].any()
    assert archive.genomes.rates.shape == (6, 2)
    assert archive.fitness.shape == (6,) and np.all(np.isneginf(archive.fitness))
    assert archive.descriptors.shape == (6, 2) and archive.density.shape == (6,)
    assert archive.centroids.shape == (6, 2)
    assert not archive.filled.any() and archive.num_cells == 6
    with pytest.raises(ValueError, match="one individual"):
        init_archive(LINE, make_population([1.0, 2.0]))


def assert_cell_holds(archive, cell, population, index, result):
    """The cell holds individual ``index`` of ``population`` / ``result`` exactly."""
    chex.assert_trees_all_equal(archive.genomes[cell], population[index])
    assert archive.fitness[cell] == result.fitness[index]
    np.testing.assert_array_equal(archive.descriptors[cell], result.descriptors[index])
    assert archive.density[cell] == result.extras["density"][index]


def test_add_invalid_individuals_never_enter():
    archive = init_archive(LINE, template())
    population = make_population([1, 2, 3, 4, 5])
    result = make_result([NAN, INF, -INF, 1.0, 2.0], [[0.1], [0.1], [0.1], [NAN], [INF]])
    archive, inserted = add(LINE, archive, population, result)
    np.testing.assert_array_equal(inserted, [False] * 5)
    assert not archive.filled.any()
    chex.assert_trees_all_equal(archive.genomes, init_archive(LINE, template()).genomes)
    # An invalid individual does not block a valid one in the same cell, even with a lower index.
    result = make_result([NAN, 0.5], [[0.1], [0.1]], [0.3, 0.4])
    archive, inserted = add(LINE, archive, make_population([7, 8]), result)
    np.testing.assert_array_equal(inserted, [False, True])
    assert_cell_holds(archive, 0, make_population([7, 8]), 1, result)


def test_add_strictly_better_replacement():
    archive = init_archive(LINE, template())
    first = make_population([1, 2])
    result = make_result([1.0, 2.0], [[0.1], [0.6]], [0.2, 0.3])
    archive, inserted = add(LINE, archive, first, result)
    np.testing.assert_array_equal(inserted, [True, True])
    np.testing.assert_array_equal(archive.fitness, [1.0, -INF, 2.0, -INF])

    # Equal fitness does not replace; lower does not; strictly higher does.
    second = make_population([3, 4, 5])
    result2 = make_result([1.0, 1.5, 2.5], [[0.2], [0.55], [0.74]], [0.5, 0.6, 0.7])
    archive, inserted = add(LINE, archive, second, result2)
    np.testing.assert_array_equal(inserted, [False, False, True])
    np.testing.assert_array_equal(archive.fitness, [1.0, -INF, 2.5, -INF])
    assert_cell_holds(archive, 0, first, 0, result)
    assert_cell_holds(archive, 2, second, 2, result2)


def test_add_within_batch_clash():
    archive = init_archive(LINE, template())
    population = make_population([0, 1, 2, 3, 4, 5, 6])
    # Cell 1: fitness 3, 4, 5, 5 -> index 2 (lowest of the tied maxima). Cell 3: 7, 7 -> index 4
    # (1.0 is the upper bound, so it falls in the last cell). Cell 0: a single individual.
    result = make_result(
        [3.0, 4.0, 5.0, 5.0, 7.0, 7.0, -1.0],
        [[0.3], [0.4], [0.49], [0.26], [0.9], [1.0], [0.0]],
        [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7],
    )
    archive, inserted = add(LINE, archive, population, result)
    np.testing.assert_array_equal(inserted, [False, False, True, False, True, False, True])
    np.testing.assert_array_equal(archive.fitness, [-1.0, 5.0, -INF, 7.0])
    assert_cell_holds(archive, 0, population, 6, result)
    assert_cell_holds(archive, 1, population, 2, result)
    assert_cell_holds(archive, 3, population, 4, result)
    assert archive.genomes.masks["w"][2].tolist() == [False] * 3  # empty cell untouched


def test_add_batch_winner_must_beat_incumbent():
    archive = init_archive(LINE, template())
    archive, _ = add(LINE, archive, make_population([1]), make_result([5.0], [[0.1]], [0.5]))
    # Batch winner (5.0) ties the incumbent: nothing changes, and the loser is not inserted either.
    archive, inserted = add(
        LINE, archive, make_population([2, 3]), make_result([4.0, 5.0], [[0.1], [0.2]], [0.1, 0.1])
    )
    np.testing.assert_array_equal(inserted, [False, False])
    assert archive.genomes.params["w"][0, 0] == 1.0


def test_add_missing_density_is_a_clear_error():
    archive = init_archive(LINE, template())
    result = EvalResult(fitness=jnp.zeros(1), descriptors=jnp.zeros((1, 1)))
    with pytest.raises(KeyError, match="density"):
        add(LINE, archive, make_population([1]), result)


def test_add_works_on_cvt():
    archive = init_archive(CVT, template())
    descriptors = jnp.asarray([[0.0, 1.0], [0.5, 2.5], [0.0, 1.0]])
    result = make_result([1.0, 2.0, 3.0], descriptors)
    archive, inserted = add(CVT, archive, make_population([1, 2, 3]), result)
    np.testing.assert_array_equal(inserted, [False, True, True])
    cells = np.asarray(CVT.cell_index(archive.centroids, descriptors))
    assert cells[0] == cells[2] != cells[1]
    assert archive.fitness[cells[2]] == 3.0 and archive.fitness[cells[1]] == 2.0
    assert int(archive.filled.sum()) == len(set(cells.tolist()))


def test_jitted_add_does_not_recompile():
    chex.clear_trace_counter()

    @jax.jit
    @chex.assert_max_traces(n=1)
    def step(archive, population, result):
        return add(LINE, archive, population, result)

    archive = init_archive(LINE, template())
    archive, _ = step(archive, make_population([1, 2]), make_result([1.0, 2.0], [[0.1], [0.9]]))
    archive, inserted = step(
        archive, make_population([3, 4]), make_result([3.0, 0.0], [[0.1], [0.9]])
    )
    np.testing.assert_array_equal(inserted, [True, False])
    # The exported jitted variant agrees with the plain function.
    reference, reference_inserted = add(
        LINE,
        init_archive(LINE, template()),
        make_population([1, 2]),
        make_result([1.0, 2.0], [[0.1], [0.9]]),
    )
    compiled, compiled_inserted = jitted_add(
        LINE,
        init_archive(LINE, template()),
        make_population([1, 2]),
        make_result([1.0, 2.0], [[0.1], [0.9]]),
    )
    chex.assert_trees_all_equal(reference, compiled)
    np.testing.assert_array_equal(reference_inserted, compiled_inserted)


# ----- property test ------------------------------------------------------------------------------

BATCH = 5
SQUARE = GridSpec(lower=(0.0, 0.0), upper=(1.0, 1.0), resolution=(2, 2))
_square_add = jax.jit(add, static_argnums=0)

fitness_values = st.sampled_from([0.0, 1.0, 2.0, 3.0, -1.5, NAN, INF, -INF])
descriptor_values = st.sampled_from([-0.25, 0.0, 0.25, 0.5, 0.75, 1.0, 1.25, NAN])
batches = st.lists(
    st.tuples(
        st.lists(fitness_values, min_size=BATCH, max_size=BATCH),
        st.lists(st.tuples(descriptor_values, descriptor_values), min_size=BATCH, max_size=BATCH),
    ),
    min_size=1,
    max_size=4,
)


@settings(max_examples=40, deadline=None)
@given(batches)
def test_add_property_never_loses_a_better_elite(batch_list):
    archive = init_archive(SQUARE, template())
    best = {}  # cell -> (fitness, individual id), the sequential reference
    previous_filled = np.zeros(SQUARE.num_cells, bool)
    for step, (fitness, descriptors) in enumerate(batch_list):
        ids = [10 * step + i for i in range(BATCH)]
        population = make_population(ids)
        result = make_result(fitness, descriptors)
        cells = np.asarray(SQUARE.cell_index(None, result.descriptors))
        expected_inserted = []
        for i in range(BATCH):
            valid = math.isfinite(fitness[i]) and all(math.isfinite(d) for d in descriptors[i])
            better = valid and fitness[i] > best.get(cells[i], (-INF, None))[0]
            if better:
                best[cells[i]] = (fitness[i], ids[i])
            expected_inserted.append(better)
        # A cell updated twice in one batch keeps only the last (highest) one as inserted.
        for i in range(BATCH):
            if expected_inserted[i] and best[cells[i]][1] != ids[i]:
                expected_inserted[i] = False

        archive, inserted = _square_add(SQUARE, archive, population, result)
        np.testing.assert_array_equal(inserted, expected_inserted)
        for cell in range(SQUARE.num_cells):
            fitness_value, owner = best.get(cell, (-INF, None))
            assert archive.fitness[cell] == fitness_value
            if owner is not None:
                assert archive.genomes.params["w"][cell, 0] == owner
                assert SQUARE.cell_index(None, archive.descriptors[cell][None, :])[0] == cell
        filled = np.asarray(archive.filled)
        assert np.all(filled >= previous_filled)  # coverage never shrinks
        previous_filled = filled


# ----- sample -------------------------------------------------------------------------------------


def test_sample_only_returns_filled_cells():
    archive = init_archive(GridSpec((0.0,), (1.0,), (6,)), template())
    spec = GridSpec((0.0,), (1.0,), (6,))
    archive, _ = add(
        spec,
        archive,
        make_population([11, 13, 15]),
        make_result([1.0, 2.0, 3.0], [[0.05], [0.45], [0.95]]),
    )
    indices = sample_indices(jax.random.key(0), archive, 300)
    assert indices.shape == (300,) and indices.dtype == jnp.int32
    assert set(np.asarray(indices).tolist()) == {0, 2, 5}
    parents = sample(jax.random.key(0), archive, 300)
    assert parents.size == 300 and parents.params["w"].shape == (300, 3)
    assert set(np.asarray(parents.params["w"][:, 0]).tolist()) == {11.0, 13.0, 15.0}
    chex.assert_trees_all_equal(parents, jitted_sample(jax.random.key(0), archive, 300))


def test_sample_is_uniform_over_filled_cells():
    spec = GridSpec((0.0,), (1.0,), (6,))
    archive = init_archive(spec, template())
    archive, _ = add(
        spec,
        archive,
        make_population([11, 13, 15]),
        make_result([1.0, 2.0, 3.0], [[0.05], [0.45], [0.95]]),
    )
    counts = np.bincount(
        np.asarray(sample_indices(jax.random.key(3), archive, 30_000)), minlength=6
    )
    assert counts[[1, 3, 4]].sum() == 0
    # 10,000 expected per filled cell; binomial sd ~82, so +-400 is about 5 sd.
    np.testing.assert_allclose(counts[[0, 2, 5]], 10_000, atol=400)


def test_sample_from_empty_archive_returns_zero_genomes():
    parents = sample(jax.random.key(1), init_archive(LINE, template()), 4)
    assert parents.size == 4
    assert not np.any(np.asarray(parents.params["w"])) and not parents.masks["w"].any()


def test_elites_host_helper():
    archive = init_archive(LINE, template())
    archive, _ = add(
        LINE, archive, make_population([1, 2]), make_result([1.0, 2.0], [[0.9], [0.3]], [0.5, 0.25])
    )
    out = elites(archive)
    np.testing.assert_array_equal(out["cells"], [1, 3])
    np.testing.assert_array_equal(out["fitness"], [2.0, 1.0])
    np.testing.assert_array_equal(out["density"], [0.25, 0.5])
    np.testing.assert_array_equal(out["genomes"].params["w"][:, 0], [2.0, 1.0])


# ----- metrics ------------------------------------------------------------------------------------


def hand_built_archive() -> Archive:
    archive = init_archive(GridSpec((0.0,), (1.0,), (5,)), template())
    return archive.replace(
        fitness=jnp.asarray([1.0, -INF, 3.0, 2.0, 0.5], jnp.float32),
        density=jnp.asarray([0.1, 0.0, 0.5, 0.25, 0.05], jnp.float32),
    )


def test_qd_metrics_exact():
    metrics = qd_metrics(hand_built_archive(), qd_offset=-1.0)
    assert set(metrics) == {
        "qd_score",
        "coverage",
        "num_filled",
        "max_fitness",
        "mean_fitness",
        "best_fitness_density_le_10",
        "best_fitness_density_le_25",
        "best_fitness_density_le_50",
        "best_fitness_density_le_100",
    }
    assert float(metrics["qd_score"]) == 2.0 + 4.0 + 3.0 + 1.5
    assert metrics["coverage"] == np.float32(0.8)
    assert int(metrics["num_filled"]) == 4
    assert float(metrics["max_fitness"]) == 3.0
    assert float(metrics["mean_fitness"]) == pytest.approx(6.5 / 4, abs=1e-7)
    assert float(metrics["best_fitness_density_le_10"]) == 1.0  # float32 0.1 within tolerance
    assert float(metrics["best_fitness_density_le_25"]) == 2.0
    assert float(metrics["best_fitness_density_le_50"]) == 3.0
    assert float(metrics["best_fitness_density_le_100"]) == 3.0
    jitted = jax.jit(qd_metrics, static_argnums=(2,))(hand_built_archive(), -1.0, (0.01, 0.3))
    assert float(jitted["best_fitness_density_le_1"]) == -INF
    assert float(jitted["best_fitness_density_le_30"]) == 2.0


def test_qd_metrics_empty_archive():
    metrics = qd_metrics(init_archive(LINE, template()), qd_offset=0.0)
    assert float(metrics["qd_score"]) == 0.0 and float(metrics["coverage"]) == 0.0
    assert int(metrics["num_filled"]) == 0 and float(metrics["mean_fitness"]) == 0.0
    assert float(metrics["max_fitness"]) == -INF
    assert float(metrics["best_fitness_density_le_100"]) == -INF
    with pytest.raises(ValueError, match="duplicate"):
        qd_metrics(init_archive(LINE, template()), 0.0, density_bands=(0.1, 0.101))


# ----- the cheap paths of insertion and parent sampling (issue "engine cost") -------------------


@pytest.mark.parametrize("size", [1, 7, 400, 4097, 70_000])
def test_inclusive_count_equals_cumsum(size):
    """The tiled matrix-product count equals NumPy's cumsum exactly, for square, ragged and
    fallback (> 256^2) sizes, dense and sparse flags."""
    for density in (0.0, 0.03, 1.0):
        flags = np.random.default_rng(size).random(size) < density
        counted = np.asarray(jax.jit(inclusive_count)(jnp.asarray(flags)))
        np.testing.assert_array_equal(counted, np.cumsum(flags))
        assert counted.dtype == np.int32


@pytest.mark.parametrize("batch,cells", [(8, 4), (64, 4096), (256, 64)])
def test_batch_winners_pairwise_equals_scatter(batch, cells, monkeypatch):
    """The all-pairs comparison (small batches) and the [C] scatters (large ones) pick the same
    winners: ties in fitness and cell, invalid rows and the sentinel cell included."""
    from synprune_jax.archives import repertoire

    rng = np.random.default_rng(batch * cells)
    for _ in range(3):
        cell = rng.integers(0, cells, batch)
        fitness = rng.integers(0, 4, batch).astype(np.float32)  # many exact ties
        valid = rng.random(batch) < 0.8
        cell = jnp.asarray(np.where(valid, cell, cells), jnp.int32)
        fitness = jnp.asarray(np.where(valid, fitness, -np.inf), jnp.float32)
        picks = []
        for pairs in (10**9, 0):
            monkeypatch.setattr(repertoire, "_PAIRWISE_PAIRS_PER_CELL", pairs)
            picks.append(
                np.asarray(repertoire._batch_winners(cell, fitness, jnp.asarray(valid), cells))
            )
        np.testing.assert_array_equal(picks[0], picks[1])
        # the rule itself: one winner per occupied cell, the best fitness, lowest index on ties
        for c in set(np.asarray(cell)[valid].tolist()):
            rows = np.flatnonzero(valid & (np.asarray(cell) == c))
            best = rows[np.argmax(np.asarray(fitness)[rows])]
            assert picks[0][rows].tolist() == [row == best for row in rows]
        assert not picks[0][~valid].any()
