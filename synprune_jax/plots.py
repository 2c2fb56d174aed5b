"""Matplotlib figures (host only; numpy inputs).

Figures are built with the object-oriented API (``matplotlib.figure.Figure`` rendered by the Agg
canvas), never ``pyplot``: no global backend switch, no figure registry to leak, safe in threads and
in notebooks that use another backend. Each function writes one image (format from the file
suffix, e.g. ``.png``), creates missing parent folders, and returns the saved path.

Empty archive cells are those with a non-finite fitness (archives hold ``-inf`` there).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np


def _new_figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _save(figure, path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    return path


def _per_dimension(value, num_dims: int, name: str) -> np.ndarray:
    array = np.asarray(value, dtype=np.float64)
    if array.ndim > 1 or array.size not in (1, num_dims):
        raise ValueError(f"{name} must be a scalar or have shape ({num_dims},), got {array.shape}")
    return np.broadcast_to(array.reshape(-1), (num_dims,)).copy()


def _finite_limits(values: np.ndarray) -> tuple[float, float]:
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return 0.0, 1.0
    low, high = float(finite.min()), float(finite.max())
    if low == high:
        low, high = low - 0.5, high + 0.5
    return low, high


def plot_archive_heatmap(
    path: str | os.PathLike,
    fitness: np.ndarray,
    centroids: np.ndarray,
    *,
    resolution: int | Sequence[int] | None = None,
    lower: float | Sequence[float] | np.ndarray,
    upper: float | Sequence[float] | np.ndarray,
    labels: tuple[str, str] = ("descriptor 1", "descriptor 2"),
    title: str | None = None,
) -> Path:
    """Archive fitness over the first two descriptor dimensions.

    Args:
        path: output image path.
        fitness: ``[C]`` elite fitness; non-finite marks an empty cell.
        centroids: ``[C, D]`` cell centres, ``D >= 2``.
        resolution: grid archive: cells per dimension (an int or ``D`` ints) -> ``imshow`` of the
            fitness grid, empty cells left blank, colour bar "fitness". ``None`` (CVT archive) ->
            scatter of the centroids coloured by fitness, empty cells as small grey outlines.
        lower, upper: descriptor bounds, scalars or ``[D]``.
        labels: axis labels for the first two dimensions.
        title: optional figure title.

    With ``D > 2`` only the first two dimensions are drawn: a grid pixel shows the max fitness over
    all cells that share its first two indices; a CVT scatter projects centroids onto the first two
    dims and draws the fitter elites on top, so each location shows (visually) the max.

    Returns:
        The saved path.
    """
    fitness = np.asarray(fitness, dtype=np.float64)
    centroids = np.asarray(centroids, dtype=np.float64)
    if centroids.ndim != 2 or centroids.shape[1] < 2:
        raise ValueError(f"centroids must be [C, D] with D >= 2, got shape {centroids.shape}")
    num_cells, num_dims = centroids.shape
    if fitness.shape != (num_cells,):
        raise ValueError(f"fitness must have shape ({num_cells},), got {fitness.shape}")
    lower_bounds = _per_dimension(lower, num_dims, "lower")
    upper_bounds = _per_dimension(upper, num_dims, "upper")
    if np.any(upper_bounds <= lower_bounds):
        raise ValueError(
            f"upper {upper_bounds} must exceed lower {lower_bounds} in every dimension"
        )
    filled = np.isfinite(fitness)

    figure = _new_figure(6.0, 5.0)
    axes = figure.add_subplot()
    if resolution is not None:
        cells = np.broadcast_to(np.asarray(resolution, dtype=np.int64), (num_dims,))
        if np.any(cells < 1):
            raise ValueError(f"resolution must be positive, got {resolution}")
        cells_xy = cells[:2]
        relative = (centroids[:, :2] - lower_bounds[:2]) / (upper_bounds[:2] - lower_bounds[:2])
        index = np.clip(np.floor(relative * cells_xy).astype(np.int64), 0, cells_xy - 1)
        grid = np.full((int(cells_xy[0]), int(cells_xy[1])), -np.inf)
        np.maximum.at(grid, (index[filled, 0], index[filled, 1]), fitness[filled])
        grid[~np.isfinite(grid)] = np.nan
        low, high = _finite_limits(grid)
        image = axes.imshow(
            np.ma.masked_invalid(grid.T),  # rows = second descriptor
            origin="lower",
            extent=(lower_bounds[0], upper_bounds[0], lower_bounds[1], upper_bounds[1]),
            aspect="auto",
            interpolation="nearest",
            cmap="viridis",
            vmin=low,
            vmax=high,
        )
    else:
        if np.any(~filled):
            axes.scatter(
                centroids[~filled, 0],
                centroids[~filled, 1],
                s=6,
                facecolors="none",
                edgecolors="0.8",
                linewidths=0.5,
            )
        order = np.argsort(fitness[filled], kind="stable")  # fittest drawn last, on top
        low, high = _finite_limits(fitness)
        image = axes.scatter(
            centroids[filled, 0][order],
            centroids[filled, 1][order],
            c=fitness[filled][order],
            s=14,
            cmap="viridis",
            vmin=low,
            vmax=high,
        )
        axes.set_xlim(lower_bounds[0], upper_bounds[0])
        axes.set_ylim(lower_bounds[1], upper_bounds[1])
    figure.colorbar(image, ax=axes, label="fitness")
    axes.set_xlabel(labels[0])
    axes.set_ylabel(labels[1])
    coverage = filled.mean() if num_cells else 0.0
    axes.set_title(title if title is not None else f"archive ({coverage:.1%} filled)")
    return _save(figure, path)


def plot_curves(
    path: str | os.PathLike,
    metrics: Mapping[str, np.ndarray],
    keys: Sequence[str] = ("qd_score", "coverage", "max_fitness"),
) -> Path:
    """One subplot per metric against generation.

    Args:
        path: output image path.
        metrics: ``{name: [G]}``, e.g. :func:`synprune_jax.runner.read_metrics`; the x axis is
            ``metrics["generation"]`` when present, else ``0..G-1``.
        keys: metrics to plot; names missing from ``metrics`` are skipped.

    Returns:
        The saved path.

    Raises:
        ValueError: if none of ``keys`` is in ``metrics``.
    """
    present = [key for key in keys if key in metrics]
    if not present:
        raise ValueError(f"none of {tuple(keys)} in metrics (have {sorted(metrics)})")
    length = len(np.asarray(metrics[present[0]]))
    generations = np.asarray(metrics.get("generation", np.arange(length)))
    figure = _new_figure(6.0, 2.2 * len(present))
    axes_list = figure.subplots(len(present), 1, sharex=True, squeeze=False)[:, 0]
    for axes, key in zip(axes_list, present, strict=True):
        values = np.asarray(metrics[key], dtype=np.float64)
        if values.shape != generations.shape:
            raise ValueError(
                f"metric {key!r} has shape {values.shape}, generation has {generations.shape}"
            )
        axes.plot(generations, values, linewidth=1.2)
        axes.set_ylabel(key)
        axes.grid(alpha=0.3)
    axes_list[-1].set_xlabel("generation")
    return _save(figure, path)


def plot_fitness_vs_density(
    path: str | os.PathLike,
    density: np.ndarray,
    fitness: np.ndarray,
    bands: Sequence[float] = (0.1, 0.25, 0.5, 1.0),
) -> Path:
    """Elite fitness against connection density, with the best fitness within each density band.

    Args:
        path: output image path.
        density: ``[C]`` fraction of active connections per elite, in ``[0, 1]``.
        fitness: ``[C]``; non-finite marks an empty cell (not drawn).
        bands: density thresholds; the step line shows, for each band ``b``, the best fitness
            among elites with ``density <= b`` (no point where no elite qualifies).

    Returns:
        The saved path.
    """
    density = np.asarray(density, dtype=np.float64)
    fitness = np.asarray(fitness, dtype=np.float64)
    if density.shape != fitness.shape or density.ndim != 1:
        raise ValueError(f"density {density.shape} and fitness {fitness.shape} must be equal [C]")
    thresholds = np.sort(np.asarray(bands, dtype=np.float64))
    filled = np.isfinite(fitness) & np.isfinite(density)
    best = np.array(
        [
            fitness[filled & (density <= band)].max()
            if np.any(filled & (density <= band))
            else np.nan
            for band in thresholds
        ]
    )
    figure = _new_figure(6.0, 4.5)
    axes = figure.add_subplot()
    axes.scatter(density[filled], fitness[filled], s=10, alpha=0.6, label="elites")
    axes.step(
        thresholds, best, where="post", color="C3", linewidth=1.5, label="best at density <= band"
    )
    axes.plot(thresholds, best, "o", color="C3")
    axes.set_xlabel("density (fraction of active connections)")
    axes.set_ylabel("fitness")
    axes.set_xlim(0.0, 1.03 * max(1.0, float(thresholds.max()) if thresholds.size else 1.0))
    axes.grid(alpha=0.3)
    axes.legend(loc="lower right")
    return _save(figure, path)
