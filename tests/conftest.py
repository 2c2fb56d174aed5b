"""Test-suite settings: strict JAX flags and a persistent compilation cache."""

import os

import jax

jax.config.update("jax_numpy_rank_promotion", "raise")
# Compiled Brax rollouts are the slow part of the suite; cache them across test processes/runs.
jax.config.update("jax_compilation_cache_dir",
                  os.environ.get("JAX_COMPILATION_CACHE_DIR",
                                 os.path.join(os.path.dirname(__file__), "..", ".jax_cache")))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
