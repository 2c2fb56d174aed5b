"""Activation-guided pruning of autoencoders: canonical training and spatial coevolution.

* data: :func:`make_binary_clustering` (:class:`BinaryClusteringSpec`);
* model: :class:`AutoencoderSpec`, :func:`init_autoencoder`, :func:`reconstruct`,
  :func:`l1_loss`;
* operators (one autoencoder, pure): :func:`prune_keep` (``random | variance | conjunctive``),
  :func:`conjunctive_units`, :func:`variance_keep_probability`, :func:`variance_scores`,
  :func:`random_keep`, :func:`apply_keep`;
* schedules: :func:`prune_probability` (:data:`SCHEDULES`);
* loops (runner algorithms, trials vmapped): :class:`CanonicalTraining`,
  :class:`SpatialCoevolution` (ring or toroidal grid) with the static :class:`TrainingConfig` /
  :class:`CoevolutionConfig` and the numeric :class:`TrainingHyper` passed to ``init`` and
  ``step`` (:func:`check_hyper` checks its ranges); runs that differ only in it share one compiled
  program in a sweep. Training passes use :func:`synprune_jax.training.fit` with ``optax.adam``
  (canonical) or :func:`fresh_adam` (coevolution).

See ``docs/autoencoder.md``.
"""

from synprune_jax.autoencoder.data import BinaryClusteringSpec, make_binary_clustering
from synprune_jax.autoencoder.model import (SMALL, AutoencoderSpec, init_autoencoder, l1_loss,
                                            reconstruct)
from synprune_jax.autoencoder.pruning import (OPERATORS, accumulate_stats, apply_keep,
                                              conjunctive_units, init_stats, prune_keep,
                                              random_keep, variance_keep_probability,
                                              variance_scores)
from synprune_jax.autoencoder.schedules import SCHEDULES, prune_probability
from synprune_jax.autoencoder.training import (CanonicalState, CanonicalTraining,
                                               CoevolutionConfig, CoevolutionState,
                                               SpatialCoevolution, TrainingConfig, TrainingHyper,
                                               check_hyper, final_per_trial, fresh_adam)

__all__ = [
    "AutoencoderSpec", "BinaryClusteringSpec", "CanonicalState", "CanonicalTraining",
    "CoevolutionConfig", "CoevolutionState", "OPERATORS", "SCHEDULES", "SMALL",
    "SpatialCoevolution", "TrainingConfig", "TrainingHyper",
    "accumulate_stats", "apply_keep", "check_hyper", "conjunctive_units", "final_per_trial",
    "fresh_adam", "init_autoencoder",
    "init_stats", "l1_loss",
    "make_binary_clustering", "prune_keep", "prune_probability", "random_keep", "reconstruct",
    "variance_keep_probability", "variance_scores",
]
