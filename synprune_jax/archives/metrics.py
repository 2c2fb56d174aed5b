"""Quality-diversity metrics of an archive (jittable)."""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp

from synprune_jax.archives.repertoire import Archive

# Absolute tolerance on density when comparing it with a band (float32 densities such as 0.1 are
# stored slightly above the decimal value).
DENSITY_TOLERANCE = 1e-6


def density_band_key(band: float) -> str:
    """Metric name of a density band: ``0.25 -> "best_fitness_density_le_25"``."""
    return f"best_fitness_density_le_{int(round(band * 100))}"


def qd_metrics(
    archive: Archive, qd_offset: float, density_bands: Sequence[float] = (0.1, 0.25, 0.5, 1.0)
) -> dict[str, jax.Array]:
    """Summary statistics of an archive.

    Args:
        archive: archive with ``C`` cells (empty cells have fitness ``-inf``).
        qd_offset: the stated lower bound of fitness. Each filled cell contributes
            ``fitness - qd_offset`` to the QD score, so the score is non-negative (and never
            decreases when an elite is added or improved) whenever every fitness is
            ``>= qd_offset``. May be a Python float or a traced scalar.
        density_bands: static sequence of densities ``b``; each adds the key
            ``best_fitness_density_le_{round(100 b)}``.

    Returns:
        Dict of scalars:

        * ``qd_score`` (float32): sum over filled cells of ``fitness - qd_offset``; 0 if empty.
        * ``coverage`` (float32): filled cells / ``C``.
        * ``num_filled`` (int32).
        * ``max_fitness`` (float32): ``-inf`` if empty.
        * ``mean_fitness`` (float32): mean over filled cells; 0 if empty (never NaN).
        * ``best_fitness_density_le_{k}`` (float32) for each band ``b``: best fitness among
          elites with ``density <= b + 1e-6``; ``-inf`` if there is none.

    Raises:
        ValueError: if two bands map to the same key.

    Examples:
        >>> from synprune_jax.archives import Archive
        >>> from synprune_jax.types import Population
        >>> archive = Archive(  # three cells, the middle one empty
        ...     genomes=Population(params={}, masks={}, rates=jnp.zeros((3, 2))),
        ...     fitness=jnp.array([1.0, -jnp.inf, 3.0]),
        ...     descriptors=jnp.array([[0.2], [0.0], [0.8]]),
        ...     density=jnp.array([0.2, 0.0, 0.5]),
        ...     centroids=jnp.array([[1 / 6], [0.5], [5 / 6]]),
        ... )
        >>> metrics = jax.jit(qd_metrics, static_argnames="density_bands")(
        ...     archive, qd_offset=-1.0, density_bands=(0.25, 1.0)
        ... )
        >>> {name: round(float(value), 4) for name, value in metrics.items()}  # keys sorted by jit
        {'best_fitness_density_le_100': 3.0, 'best_fitness_density_le_25': 1.0, 'coverage': 0.6667,
         'max_fitness': 3.0, 'mean_fitness': 2.0, 'num_filled': 2.0, 'qd_score': 6.0}
        >>> metrics["num_filled"]
        Array(2, dtype=int32)
    """
    keys = [density_band_key(band) for band in density_bands]
    if len(set(keys)) != len(keys):
        raise ValueError(f"density_bands {tuple(density_bands)} give duplicate keys {keys}")
    fitness = archive.fitness.astype(jnp.float32)
    filled = archive.filled
    num_filled = jnp.sum(filled, dtype=jnp.int32)
    filled_fitness = jnp.where(filled, fitness, 0.0)
    metrics = {
        "qd_score": jnp.sum(jnp.where(filled, fitness - qd_offset, 0.0)).astype(jnp.float32),
        "coverage": num_filled.astype(jnp.float32) / archive.num_cells,
        "num_filled": num_filled,
        "max_fitness": jnp.max(fitness),
        "mean_fitness": jnp.sum(filled_fitness) / jnp.maximum(num_filled, 1).astype(jnp.float32),
    }
    for key, band in zip(keys, density_bands, strict=True):
        in_band = filled & (archive.density <= band + DENSITY_TOLERANCE)
        metrics[key] = jnp.max(jnp.where(in_band, fitness, -jnp.inf))
    return metrics
