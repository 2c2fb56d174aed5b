"""synprune_jax: vectorized neuroevolution for evolutionary synaptic pruning in JAX.

The public API in one screen (submodules hold the rest):

* data: :class:`Population` (params + boolean masks + per-individual rates, leading axis ``[P]``),
  :class:`EvalResult`, :class:`MLPSpec`;
* masks: :func:`init_masks`, :func:`init_masks_beta`, :func:`apply_masks`, :func:`density`,
  :func:`mask_statistics`, :func:`forward_prune`;
* operators (per individual, vmap for a population): :func:`prune_magnitude`,
  :func:`prune_random`, :func:`prune_magnitude_to_density`, :func:`regrow`,
  :func:`flip_mutation`, :func:`gaussian_mutation`, :func:`mutate`;
* tasks: :class:`BraxTask`, :class:`KinematicArm`, :func:`make_task`;
* archives: :class:`GridSpec`, :class:`CVTSpec`, :class:`Archive`, :func:`qd_metrics`;
* MAP-Elites: :class:`MapElites`, :class:`MapElitesConfig`, :class:`MutationConfig`,
  :class:`MutationHyper`;
* running: :class:`RunConfig`, :func:`run`, :func:`read_metrics`; experiments by name in
  :data:`synprune_jax.experiments.EXPERIMENTS`.
"""

from synprune_jax.algorithms.map_elites import MapElites, MapElitesConfig, MapElitesState
from synprune_jax.archives import Archive, CVTSpec, GridSpec, qd_metrics
from synprune_jax.masks import (apply_masks, density, forward_prune, init_masks, init_masks_beta,
                                mask_statistics)
from synprune_jax.networks import MLPSpec
from synprune_jax.pruning import (flip_mutation, prune_magnitude, prune_magnitude_to_density,
                                  prune_random, regrow)
from synprune_jax.runner import RunConfig, read_metrics, run
from synprune_jax.tasks import BraxTask, KinematicArm, make_task
from synprune_jax.types import EvalResult, Population
from synprune_jax.variation import MutationConfig, MutationHyper, gaussian_mutation, mutate

__version__ = "0.1.0"

__all__ = [
    "Archive", "BraxTask", "CVTSpec", "EvalResult", "GridSpec", "KinematicArm", "MLPSpec",
    "MapElites", "MapElitesConfig", "MapElitesState", "MutationConfig", "MutationHyper",
    "Population", "RunConfig", "apply_masks", "density", "flip_mutation", "forward_prune",
    "gaussian_mutation", "init_masks", "init_masks_beta", "make_task", "mask_statistics",
    "mutate", "prune_magnitude", "prune_magnitude_to_density", "prune_random", "qd_metrics",
    "read_metrics", "regrow", "run",
]
