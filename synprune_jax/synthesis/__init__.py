"""Synaptic-cluster-driven evolutionary synthesis of sparse networks ("evolutionary deep
intelligence"): the probabilistic genetic encoding (:mod:`~synprune_jax.synthesis.encoding`),
LeNet-5 with synapse / cluster masks (:mod:`~synprune_jax.synthesis.lenet`), the generation loop
in the runner's protocol (:mod:`~synprune_jax.synthesis.algorithm`: :class:`ClusterSynthesis`)
and the data (:mod:`~synprune_jax.synthesis.data`). See ``docs/cluster_synthesis.md``.
"""

from synprune_jax.synthesis.algorithm import (
    ClusterSynthesis,
    SynthesisConfig,
    SynthesisHyper,
    SynthesisState,
    check_hyper,
)
from synprune_jax.synthesis.data import (
    Dataset,
    load_dataset,
    load_digits_32,
    load_mnist,
    read_idx,
    write_idx,
)
from synprune_jax.synthesis.encoding import (
    EncodingConfig,
    EncodingHyper,
    check_encoding_hyper,
    cluster_probabilities,
    cluster_sums,
    gentle,
    remove_unused,
    survival_probabilities,
    synapse_probabilities,
    synthesize,
    truncate,
)
from synprune_jax.synthesis.lenet import (
    CompactNetwork,
    LeNet5,
    LeNetSpec,
    NetworkStats,
    compact,
    kept_units,
    network_stats,
)

__all__ = [
    "ClusterSynthesis",
    "CompactNetwork",
    "Dataset",
    "EncodingConfig",
    "EncodingHyper",
    "LeNet5",
    "LeNetSpec",
    "NetworkStats",
    "SynthesisConfig",
    "SynthesisHyper",
    "SynthesisState",
    "check_encoding_hyper",
    "check_hyper",
    "cluster_probabilities",
    "cluster_sums",
    "compact",
    "gentle",
    "kept_units",
    "load_dataset",
    "load_digits_32",
    "load_mnist",
    "network_stats",
    "read_idx",
    "remove_unused",
    "survival_probabilities",
    "synapse_probabilities",
    "synthesize",
    "truncate",
    "write_idx",
]
