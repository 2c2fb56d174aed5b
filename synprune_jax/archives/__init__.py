"""MAP-Elites archives (regular grid and CVT) and quality-diversity metrics."""

from synprune_jax.archives.metrics import DENSITY_TOLERANCE, density_band_key, qd_metrics
from synprune_jax.archives.repertoire import (
    Archive,
    ArchiveSpec,
    CVTSpec,
    GridSpec,
    add,
    elites,
    inclusive_count,
    init_archive,
    jitted_add,
    jitted_sample,
    lloyd_kmeans,
    sample,
    sample_indices,
)

__all__ = [
    "Archive",
    "ArchiveSpec",
    "CVTSpec",
    "DENSITY_TOLERANCE",
    "GridSpec",
    "add",
    "density_band_key",
    "elites",
    "init_archive",
    "jitted_add",
    "jitted_sample",
    "lloyd_kmeans",
    "inclusive_count",
    "qd_metrics",
    "sample",
    "sample_indices",
]
