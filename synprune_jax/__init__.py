"""synprune_jax: vectorized neuroevolution for evolutionary synaptic pruning in JAX."""

__version__ = "0.1.0"
