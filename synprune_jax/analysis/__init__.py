"""Analysis of masked networks: histogram information measures
(:mod:`~synprune_jax.analysis.information`) and the study relating MI at generation 0 to ES
learning speed (:mod:`~synprune_jax.analysis.learning_speed`)."""

from synprune_jax.analysis.information import (
    entropy,
    entropy_from_probabilities,
    histogram,
    information_profile,
    joint_entropy,
    joint_histogram,
    layer_activations,
    mutual_information,
    mutual_information_matrix,
    normalized_mutual_information,
    unit_entropies,
)
from synprune_jax.analysis.learning_speed import (
    LearningSpeedStudy,
    generations_to_threshold,
    learning_speed_table,
    plot_mi_vs_learning_speed,
    rank_correlation,
)

__all__ = [
    "LearningSpeedStudy",
    "entropy",
    "entropy_from_probabilities",
    "generations_to_threshold",
    "histogram",
    "information_profile",
    "joint_entropy",
    "joint_histogram",
    "layer_activations",
    "learning_speed_table",
    "mutual_information",
    "mutual_information_matrix",
    "normalized_mutual_information",
    "plot_mi_vs_learning_speed",
    "rank_correlation",
    "unit_entropies",
]
