"""Activation-guided pruning of autoencoders: canonical training and spatial coevolution.

Data (:mod:`~synprune_jax.autoencoder.data`), the model (:mod:`~synprune_jax.autoencoder.model`),
the pruning operators (:mod:`~synprune_jax.autoencoder.pruning`), the schedules
(:mod:`~synprune_jax.autoencoder.schedules`) and the two runner algorithms
(:mod:`~synprune_jax.autoencoder.training`: :class:`CanonicalTraining`,
:class:`SpatialCoevolution`). See ``docs/autoencoder.md``.
"""

from synprune_jax.autoencoder.data import BinaryClusteringSpec, make_binary_clustering
from synprune_jax.autoencoder.model import (
    SMALL,
    AutoencoderSpec,
    init_autoencoder,
    l1_loss,
    reconstruct,
)
from synprune_jax.autoencoder.pruning import (
    OPERATORS,
    accumulate_stats,
    apply_keep,
    conjunctive_units,
    init_stats,
    prune_keep,
    random_keep,
    variance_keep_probability,
    variance_scores,
)
from synprune_jax.autoencoder.schedules import SCHEDULES, prune_probability
from synprune_jax.autoencoder.training import (
    CanonicalState,
    CanonicalTraining,
    CoevolutionConfig,
    CoevolutionState,
    SpatialCoevolution,
    TrainingConfig,
    TrainingHyper,
    check_hyper,
    final_per_trial,
    fresh_adam,
)

__all__ = [
    "AutoencoderSpec",
    "BinaryClusteringSpec",
    "CanonicalState",
    "CanonicalTraining",
    "CoevolutionConfig",
    "CoevolutionState",
    "OPERATORS",
    "SCHEDULES",
    "SMALL",
    "SpatialCoevolution",
    "TrainingConfig",
    "TrainingHyper",
    "accumulate_stats",
    "apply_keep",
    "check_hyper",
    "conjunctive_units",
    "final_per_trial",
    "fresh_adam",
    "init_autoencoder",
    "init_stats",
    "l1_loss",
    "make_binary_clustering",
    "prune_keep",
    "prune_probability",
    "random_keep",
    "reconstruct",
    "variance_keep_probability",
    "variance_scores",
]
