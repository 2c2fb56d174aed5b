"""Synaptic-cluster-driven evolutionary synthesis of sparse networks ("evolutionary deep
intelligence").

* :mod:`~synprune_jax.synthesis.encoding`: the probabilistic genetic encoding
  (:class:`EncodingConfig` structure, :class:`EncodingHyper` constants,
  :func:`survival_probabilities`, :func:`synthesize`);
* :mod:`~synprune_jax.synthesis.lenet`: LeNet-5 with synapse / cluster masks
  (:class:`LeNetSpec`, :func:`network_stats`, :func:`compact`);
* :mod:`~synprune_jax.synthesis.algorithm`: the generation loop (:class:`ClusterSynthesis`,
  :class:`SynthesisConfig`, :class:`SynthesisHyper`, :class:`SynthesisState`) in the runner's
  protocol (``init(key, hyper)``, ``step(key, state, hyper)``);
* :mod:`~synprune_jax.synthesis.data`: scikit-learn digits at 32x32 and MNIST IDX files.

See ``docs/cluster_synthesis.md``.
"""

from synprune_jax.synthesis.algorithm import (ClusterSynthesis, SynthesisConfig, SynthesisHyper,
                                              SynthesisState, check_hyper)
from synprune_jax.synthesis.data import (Dataset, load_dataset, load_digits_32, load_mnist,
                                         read_idx, write_idx)
from synprune_jax.synthesis.encoding import (EncodingConfig, EncodingHyper, check_encoding_hyper,
                                             cluster_probabilities, cluster_sums, gentle,
                                             remove_unused, survival_probabilities,
                                             synapse_probabilities, synthesize, truncate)
from synprune_jax.synthesis.lenet import (CompactNetwork, LeNet5, LeNetSpec, NetworkStats, compact,
                                          kept_inputs, kept_units, network_stats)

__all__ = [
    "ClusterSynthesis", "CompactNetwork", "Dataset", "EncodingConfig", "EncodingHyper", "LeNet5",
    "LeNetSpec", "NetworkStats", "SynthesisConfig", "SynthesisHyper", "SynthesisState",
    "check_encoding_hyper", "check_hyper", "cluster_probabilities", "cluster_sums", "compact",
    "gentle", "kept_inputs", "kept_units", "load_dataset", "load_digits_32", "load_mnist",
    "network_stats", "read_idx", "remove_unused", "survival_probabilities",
    "synapse_probabilities", "synthesize", "truncate", "write_idx",
]
