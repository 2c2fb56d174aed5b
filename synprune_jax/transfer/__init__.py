"""Transfer learning with evolved sparse heads (multi-objective evolutionary pruning).

A frozen backbone turns images into features once (cached, :mod:`.data`, :mod:`.backbone`); a
sparse head ``features -> sparse dense layer -> dense -> softmax`` is trained per genome, the whole
population at once with ``vmap`` (:mod:`.head`); the genome masks the head's input features and /
or hidden neurons. :class:`TransferProblem` (:mod:`.problem`) maps genomes to objectives
(:mod:`.objectives`); :mod:`.ensembles` builds the report's Pareto ensembles and importance.
docs/mo_transfer.md describes the whole method.
"""

from synprune_jax.transfer.data import DataConfig, TransferData, prepare_data
from synprune_jax.transfer.ensembles import ensemble_table, importance, majority_vote
from synprune_jax.transfer.head import (
    HeadConfig,
    TrainConfig,
    genome_key,
    head_logits,
    init_head,
    train_head,
    train_population,
)
from synprune_jax.transfer.objectives import OBJECTIVES, auroc, max_softmax_score
from synprune_jax.transfer.problem import ProblemHyper, TransferProblem

__all__ = [
    "DataConfig",
    "HeadConfig",
    "OBJECTIVES",
    "ProblemHyper",
    "TrainConfig",
    "TransferData",
    "TransferProblem",
    "auroc",
    "ensemble_table",
    "genome_key",
    "head_logits",
    "importance",
    "init_head",
    "majority_vote",
    "max_softmax_score",
    "prepare_data",
    "train_head",
    "train_population",
]
