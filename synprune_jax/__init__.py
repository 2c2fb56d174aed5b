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
* archives: :class:`GridSpec`, :class:`CVTSpec`, :class:`Archive`, :func:`qd_metrics`; Pareto
  utilities :func:`non_dominated_rank`, :func:`crowding_distance`, :func:`hypervolume`,
  :class:`ParetoFront`;
* MAP-Elites: :class:`MapElites`, :class:`MapElitesConfig`, :class:`MutationConfig`,
  :class:`MutationHyper`; emitters (:mod:`synprune_jax.algorithms.emitters`):
  :class:`MutationEmitter`, :class:`ESEmitter` (an evosax ES), :class:`MixEmitter`;
  :func:`MapElitesES` builds MAP-Elites with an ES emitter (:class:`ESEmitterConfig`,
  :class:`MapElitesESHyper`);
* evolution strategies and GAs (:mod:`synprune_jax.algorithms.es`, ``.ga``):
  :class:`MaskedStrategy` (any evosax strategy on masked networks), :class:`MaskedES`
  (:class:`ESConfig`, :class:`ESHyper`), :class:`TruncationGA` (:class:`GAConfig`,
  :class:`GAHyper`); information measures (:mod:`synprune_jax.analysis`);
* multi-objective transfer pruning (:mod:`synprune_jax.transfer`,
  :mod:`synprune_jax.algorithms.nsga2`, :mod:`synprune_jax.algorithms.steady_state_ga`):
  :class:`TransferProblem`, :class:`NSGA2`, :class:`SteadyStateGA`;
* cluster-driven synthesis (:mod:`synprune_jax.synthesis`): :class:`ClusterSynthesis`,
  :class:`LeNetSpec`, :func:`synthesize`, :func:`compact`;
* autoencoder pruning (:mod:`synprune_jax.autoencoder`): :class:`CanonicalTraining`,
  :class:`SpatialCoevolution` (:class:`TrainingHyper`); minibatch training shared by the
  methods: :func:`fit`;
* gradient-based baselines (:mod:`synprune_jax.algorithms.ppo`,
  :mod:`synprune_jax.sparse_training`): :class:`PPO` (:class:`PPOConfig`, :class:`PPOHyper`)
  with GMP, static (uniform / ERK), SET or RigL pruning of the same masks;
  :func:`compare_pruning` runs them against MAP-Elites and ES at one env-step budget;
* running: every algorithm holds static structure and takes its hyper-parameters per call
  (``default_hyper``, ``init(key, hyper)``, ``step(key, state, hyper)``); :class:`RunConfig`,
  :func:`run`, :func:`read_metrics`, :func:`scan_generations`;
  sweeps and devices: :func:`sweep` (on a Ray cluster: :class:`RayCluster`),
  :class:`ShardedTask`, :class:`ChunkedTask`, :func:`make_mesh`; experiments by name in
  :data:`synprune_jax.experiments.EXPERIMENTS`;
* errors (``docs/failures.md``): :class:`ConfigError` (a ``ValueError``: bad config, override,
  output path or data file), the ``OSError`` subclasses :class:`RunDirectoryBusy`,
  :class:`RunDirectoryFull`, :class:`RunFault` (the machine failed mid-run; resume) and
  :class:`CheckpointsDamaged`, and :class:`Stopped` (SIGTERM / Ctrl-C after a checkpoint).
"""

from synprune_jax.algorithms.emitters import (
    ESEmitter,
    ESEmitterConfig,
    MapElitesESHyper,
    MixEmitter,
    MutationEmitter,
)
from synprune_jax.algorithms.es import ESConfig, ESHyper, ESState, MaskedES, MaskedStrategy
from synprune_jax.algorithms.ga import GAConfig, GAHyper, GAState, TruncationGA
from synprune_jax.algorithms.map_elites import (
    MapElites,
    MapElitesConfig,
    MapElitesES,
    MapElitesState,
)
from synprune_jax.algorithms.nsga2 import NSGA2, NSGA2Config, NSGA2Hyper, NSGA2State
from synprune_jax.algorithms.ppo import PPO, PPOConfig, PPOHyper, PPOState
from synprune_jax.algorithms.steady_state_ga import (
    SteadyStateGA,
    SteadyStateGAConfig,
    SteadyStateGAHyper,
)
from synprune_jax.analysis import (
    entropy,
    joint_entropy,
    mutual_information,
    normalized_mutual_information,
)
from synprune_jax.archives import Archive, CVTSpec, GridSpec, qd_metrics
from synprune_jax.archives.pareto import (
    ParetoFront,
    crowding_distance,
    hypervolume,
    non_dominated_rank,
)
from synprune_jax.autoencoder import (
    AutoencoderSpec,
    CanonicalTraining,
    CoevolutionConfig,
    SpatialCoevolution,
    TrainingConfig,
    TrainingHyper,
)
from synprune_jax.comparison import compare_pruning
from synprune_jax.config import ConfigError
from synprune_jax.export import (
    CompactMLP,
    RunNetworks,
    apply_compact,
    compact_mlp,
    export_network,
    inspect_run,
    network_cost,
    open_run,
    run_networks,
    select_network,
)
from synprune_jax.masks import (
    apply_masks,
    density,
    forward_prune,
    init_masks,
    init_masks_beta,
    mask_statistics,
)
from synprune_jax.networks import MLPSpec
from synprune_jax.pruning import (
    flip_mutation,
    prune_magnitude,
    prune_magnitude_to_density,
    prune_random,
    regrow,
)
from synprune_jax.replays import Replay, replay
from synprune_jax.rundir import RunDirectoryBusy, RunDirectoryFull
from synprune_jax.runner import (
    CheckpointsDamaged,
    RunConfig,
    RunFault,
    Stopped,
    read_metrics,
    run,
    scan_generations,
)
from synprune_jax.sharding import ChunkedTask, ShardedTask, make_mesh
from synprune_jax.sweeps import RayCluster, SweepResult, sweep
from synprune_jax.synthesis import (
    ClusterSynthesis,
    EncodingConfig,
    LeNetSpec,
    SynthesisConfig,
    compact,
    synthesize,
)
from synprune_jax.synthesis.algorithm import SynthesisHyper
from synprune_jax.synthesis.encoding import EncodingHyper
from synprune_jax.tasks import BraxTask, KinematicArm, make_task
from synprune_jax.training import FitResult, fit
from synprune_jax.transfer import TransferProblem
from synprune_jax.types import EvalResult, Population
from synprune_jax.variation import MutationConfig, MutationHyper, gaussian_mutation, mutate

__version__ = "0.2.0"

__all__ = [
    "PPO",
    "PPOConfig",
    "PPOHyper",
    "PPOState",
    "compare_pruning",
    "CompactMLP",
    "RunNetworks",
    "apply_compact",
    "compact_mlp",
    "export_network",
    "inspect_run",
    "network_cost",
    "open_run",
    "replay",
    "Replay",
    "run_networks",
    "select_network",
    "Archive",
    "AutoencoderSpec",
    "BraxTask",
    "CVTSpec",
    "CanonicalTraining",
    "CheckpointsDamaged",
    "ChunkedTask",
    "ClusterSynthesis",
    "ConfigError",
    "RunDirectoryBusy",
    "RunDirectoryFull",
    "RunFault",
    "Stopped",
    "CoevolutionConfig",
    "ESConfig",
    "ESEmitter",
    "ESEmitterConfig",
    "ESHyper",
    "ESState",
    "EncodingConfig",
    "EvalResult",
    "GAConfig",
    "GAHyper",
    "GAState",
    "MapElitesESHyper",
    "MixEmitter",
    "MutationEmitter",
    "NSGA2Hyper",
    "SteadyStateGAHyper",
    "EncodingHyper",
    "FitResult",
    "SynthesisHyper",
    "TrainingHyper",
    "fit",
    "GridSpec",
    "KinematicArm",
    "LeNetSpec",
    "MLPSpec",
    "MapElites",
    "MapElitesConfig",
    "MapElitesES",
    "MapElitesState",
    "MaskedES",
    "MaskedStrategy",
    "MutationConfig",
    "MutationHyper",
    "NSGA2",
    "NSGA2Config",
    "NSGA2State",
    "ParetoFront",
    "Population",
    "RayCluster",
    "RunConfig",
    "ShardedTask",
    "SpatialCoevolution",
    "SteadyStateGA",
    "SteadyStateGAConfig",
    "SweepResult",
    "SynthesisConfig",
    "TrainingConfig",
    "TransferProblem",
    "TruncationGA",
    "apply_masks",
    "compact",
    "crowding_distance",
    "density",
    "entropy",
    "flip_mutation",
    "forward_prune",
    "gaussian_mutation",
    "hypervolume",
    "init_masks",
    "init_masks_beta",
    "joint_entropy",
    "make_mesh",
    "make_task",
    "mask_statistics",
    "mutate",
    "mutual_information",
    "non_dominated_rank",
    "normalized_mutual_information",
    "prune_magnitude",
    "prune_magnitude_to_density",
    "prune_random",
    "qd_metrics",
    "read_metrics",
    "regrow",
    "run",
    "scan_generations",
    "sweep",
    "synthesize",
]
