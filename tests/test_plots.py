"""Each plot function writes a non-empty PNG."""

import itertools

import jax

jax.config.update("jax_numpy_rank_promotion", "raise")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from synprune_jax import plots  # noqa: E402

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _assert_png(path):
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE and len(data) > 1000


def _grid_centroids(resolution, lower=-1.0, upper=1.0):
    axes = [lower + (np.arange(r) + 0.5) * (upper - lower) / r for r in resolution]
    return np.array(list(itertools.product(*axes)))


@pytest.mark.parametrize("resolution", [(8, 6), (4, 3, 5)])
def test_grid_heatmap(tmp_path, resolution):
    rng = np.random.default_rng(0)
    centroids = _grid_centroids(resolution)
    fitness = rng.normal(size=len(centroids))
    fitness[rng.random(len(centroids)) < 0.4] = -np.inf  # empty cells
    path = plots.plot_archive_heatmap(
        tmp_path / "sub" / "grid.png",
        fitness,
        centroids,
        resolution=resolution,
        lower=-1.0,
        upper=1.0,
        labels=("x", "y"),
        title="grid",
    )
    assert path == tmp_path / "sub" / "grid.png"
    _assert_png(path)


def test_grid_heatmap_d_greater_than_two_takes_max_over_other_dims(tmp_path, monkeypatch):
    centroids = _grid_centroids((2, 2, 3))
    fitness = np.arange(len(centroids), dtype=np.float64)
    fitness[0] = -np.inf
    captured = {}
    original = plots._finite_limits

    def spy(values):
        captured["grid"] = np.array(values)
        return original(values)

    monkeypatch.setattr(plots, "_finite_limits", spy)
    plots.plot_archive_heatmap(
        tmp_path / "g.png", fitness, centroids, resolution=(2, 2, 3), lower=-1.0, upper=1.0
    )
    # cells are ordered with the last dim fastest: (i, j) owns 3 consecutive cells
    expected = fitness.reshape(2, 2, 3).max(axis=2)
    np.testing.assert_array_equal(captured["grid"], expected)


@pytest.mark.parametrize("num_dims", [2, 3])
def test_cvt_heatmap(tmp_path, num_dims):
    rng = np.random.default_rng(1)
    centroids = rng.uniform(0.0, 1.0, size=(64, num_dims))
    fitness = rng.normal(size=64)
    fitness[::3] = -np.inf
    path = plots.plot_archive_heatmap(
        tmp_path / "cvt.png", fitness, centroids, lower=np.zeros(num_dims), upper=1.0
    )
    _assert_png(path)


def test_heatmap_of_an_empty_archive(tmp_path):
    centroids = _grid_centroids((3, 3))
    path = plots.plot_archive_heatmap(
        tmp_path / "empty.png", np.full(9, -np.inf), centroids, resolution=3, lower=-1, upper=1
    )
    _assert_png(path)


def test_curves(tmp_path):
    generations = np.arange(1, 21)
    metrics = {
        "generation": generations,
        "qd_score": np.cumsum(np.ones(20)),
        "coverage": np.linspace(0, 0.5, 20),
        "max_fitness": np.sqrt(generations),
    }
    _assert_png(plots.plot_curves(tmp_path / "curves.png", metrics))
    _assert_png(plots.plot_curves(tmp_path / "one.png", metrics, keys=("coverage", "missing")))
    with pytest.raises(ValueError):
        plots.plot_curves(tmp_path / "none.png", metrics, keys=("missing",))


def test_fitness_vs_density(tmp_path):
    rng = np.random.default_rng(2)
    density = rng.uniform(0.05, 1.0, size=50)
    fitness = density + rng.normal(scale=0.1, size=50)
    fitness[:5] = -np.inf
    _assert_png(plots.plot_fitness_vs_density(tmp_path / "density.png", density, fitness))
