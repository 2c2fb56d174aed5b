"""MAP-Elites synaptic pruning.

One generation (:func:`step`) is pure and jittable:

    parents  = uniform sample over filled archive cells            [B]
    children = vmap(mutate)(parents)   # rates, prune/reconnect flips, forward prune, Gaussian
    result   = task.evaluate(children)                              fitness [B], descriptors [B, D]
    archive  = add(archive, children, result)                       one scatter per leaf

The initial archive is filled from ``initial_batch_size`` random networks whose per-layer density
is drawn from ``Beta(init_beta_a, init_beta_b)`` (uniform by default), so the search starts spread
over all sparsities.

Static structure lives in :class:`MapElitesConfig` (hashable); numeric knobs live in the traced
:class:`~synprune_jax.variation.MutationHyper`, so many settings can share one compiled program.

Example (kinematic arm, a second on CPU):
    >>> import jax
    >>> from synprune_jax.tasks import KinematicArm
    >>> from synprune_jax.archives import GridSpec
    >>> task = KinematicArm(num_joints=4, genotype="mlp")
    >>> config = MapElitesConfig(batch_size=32, archive=GridSpec((0.0, 0.0), (1.0, 1.0), (8, 8)))
    >>> algorithm = MapElites(config, task)
    >>> state = algorithm.init(jax.random.key(0))
    >>> state, metrics = algorithm.step(jax.random.key(1), state)
    >>> int(state.generation)
    1
"""

from __future__ import annotations

import dataclasses
from typing import Union

import jax
import jax.numpy as jnp
from flax import struct

from synprune_jax import masks as masks_lib
from synprune_jax.archives import Archive, CVTSpec, GridSpec, add, init_archive, qd_metrics, sample
from synprune_jax.types import EvalResult, Population
from synprune_jax.variation import MutationConfig, MutationHyper, mutate

ArchiveSpec = Union[GridSpec, CVTSpec]


@dataclasses.dataclass(frozen=True)
class MapElitesConfig:
    """Static configuration of MAP-Elites pruning.

    Attributes:
        archive: grid or CVT archive geometry (its descriptor dimension must match the task).
        batch_size: offspring per generation.
        initial_batch_size: random individuals evaluated to seed the archive (default:
            ``batch_size``).
        mutation: static structure of the mutation (self-adaptive rates, forward pruning).
        init_beta_a: ``a`` of the Beta distribution of initial per-layer densities.
        init_beta_b: ``b`` of that distribution.
        exact_init_density: initial masks keep exactly ``round(d * size)`` connections per layer
            (otherwise Bernoulli).
        init_per_layer: each layer draws its own initial density (True, the default) or one
            draw per network is shared by its layers (False: overall density ~ Beta(a, b)).
        qd_offset: stated lower bound of fitness; QD-score = sum over elites of (fitness - offset).
        density_bands: densities at which the best fitness is reported each generation.
    """

    archive: ArchiveSpec
    batch_size: int = 256
    initial_batch_size: int | None = None
    mutation: MutationConfig = MutationConfig()
    init_beta_a: float = 1.0
    init_beta_b: float = 1.0
    exact_init_density: bool = True
    init_per_layer: bool = True
    qd_offset: float = 0.0
    density_bands: tuple[float, ...] = (0.1, 0.25, 0.5, 1.0)

    def __post_init__(self):
        if not isinstance(self.archive, (GridSpec, CVTSpec)):
            raise TypeError(f"archive must be a GridSpec or CVTSpec, got {type(self.archive)}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.initial_batch_size is not None and self.initial_batch_size < 1:
            raise ValueError(f"initial_batch_size must be >= 1, got {self.initial_batch_size}")
        if self.init_beta_a <= 0 or self.init_beta_b <= 0:
            raise ValueError("init_beta_a and init_beta_b must be > 0")
        if not all(0.0 < band <= 1.0 for band in self.density_bands):
            raise ValueError(f"density_bands must lie in (0, 1], got {self.density_bands}")


@struct.dataclass
class MapElitesState:
    """Algorithm state: the archive and counters (no PRNG keys: they derive from the seed)."""

    archive: Archive
    generation: jax.Array  # int32 scalar
    num_evaluations: jax.Array  # int32 scalar


def validate(config: MapElitesConfig, task) -> None:
    """Checks that config and task fit together; raises ValueError before anything compiles."""
    num_descriptors = len(task.descriptor_names)
    if config.archive.num_descriptors != num_descriptors:
        raise ValueError(
            f"the archive has {config.archive.num_descriptors} descriptor dimensions but the task "
            f"produces {num_descriptors}: {list(task.descriptor_names)}")
    if config.mutation.forward_prune and task.spec is None:
        raise ValueError("mutation.forward_prune needs an MLP network; this task has a direct "
                         "genotype (set forward_prune=False)")


def random_population(key: jax.Array, task, config: MapElitesConfig, hyper: MutationHyper,
                      size: int) -> Population:
    """``size`` random networks with Beta-distributed per-layer densities."""
    maskable = task.maskable()

    def one(k):
        key_params, key_masks, key_rates = jax.random.split(k, 3)
        params = task.init_params(key_params)
        masks = masks_lib.init_masks_beta(key_masks, params, maskable, config.init_beta_a,
                                          config.init_beta_b, exact=config.exact_init_density,
                                          per_layer=config.init_per_layer)
        if config.mutation.forward_prune:
            masks = masks_lib.forward_prune(task.spec, masks)
        rates = jnp.stack([jnp.asarray(hyper.p_disconnect, jnp.float32),
                           jnp.asarray(hyper.p_connect, jnp.float32)])
        if config.mutation.self_adaptive:  # start spread over the whole rate range
            rates = jnp.exp(jax.random.uniform(key_rates, (2,), minval=jnp.log(hyper.rate_min),
                                               maxval=jnp.log(hyper.rate_max)))
        return Population(params=params, masks=masks, rates=rates)

    return jax.vmap(one)(jax.random.split(key, size))


def emit(key: jax.Array, archive: Archive, task, config: MapElitesConfig,
         hyper: MutationHyper) -> Population:
    """The mutation emitter: uniform parents from filled cells, composite mutation."""
    key_parents, key_mutate = jax.random.split(key)
    parents = sample(key_parents, archive, config.batch_size)
    mutate_one = lambda k, parent: mutate(k, parent, task.maskable(), config.mutation, hyper,
                                          task.spec)
    return jax.vmap(mutate_one)(jax.random.split(key_mutate, config.batch_size), parents)


def _metrics(config: MapElitesConfig, archive: Archive, offspring: Population,
             result: EvalResult, inserted: jax.Array) -> dict[str, jax.Array]:
    metrics = dict(qd_metrics(archive, config.qd_offset, config.density_bands))
    finite = jnp.isfinite(result.fitness)
    metrics["num_inserted"] = jnp.sum(inserted, dtype=jnp.int32)
    metrics["num_invalid"] = jnp.sum(~finite, dtype=jnp.int32)
    metrics["offspring_mean_density"] = jnp.mean(result.extras["density"])
    metrics["offspring_max_fitness"] = jnp.max(jnp.where(finite, result.fitness, -jnp.inf))
    metrics["mean_p_disconnect"] = jnp.mean(offspring.rates[:, 0])
    metrics["mean_p_connect"] = jnp.mean(offspring.rates[:, 1])
    return metrics


def init(key: jax.Array, task, config: MapElitesConfig,
         hyper: MutationHyper) -> MapElitesState:
    """Seeds an archive with ``initial_batch_size`` random individuals."""
    validate(config, task)
    key_population, key_eval = jax.random.split(key)
    size = config.initial_batch_size or config.batch_size
    population = random_population(key_population, task, config, hyper, size)
    template = jax.tree_util.tree_map(lambda leaf: leaf[0], population)
    archive = init_archive(config.archive, template)
    result = task.evaluate(key_eval, population)
    archive, _ = add(config.archive, archive, population, result)
    return MapElitesState(archive=archive, generation=jnp.zeros((), jnp.int32),
                          num_evaluations=jnp.asarray(size, jnp.int32))


def step(key: jax.Array, state: MapElitesState, task, config: MapElitesConfig,
         hyper: MutationHyper) -> tuple[MapElitesState, dict[str, jax.Array]]:
    """One generation: emit, evaluate, insert. Pure; the caller jits / scans it."""
    key_emit, key_eval = jax.random.split(key)
    offspring = emit(key_emit, state.archive, task, config, hyper)
    result = task.evaluate(key_eval, offspring)
    archive, inserted = add(config.archive, state.archive, offspring, result)
    state = MapElitesState(archive=archive, generation=state.generation + 1,
                           num_evaluations=state.num_evaluations + config.batch_size)
    metrics = _metrics(config, archive, offspring, result, inserted)
    metrics["num_evaluations"] = state.num_evaluations
    return state, metrics


class MapElites:
    """MAP-Elites bound to a task and hyper-parameters (the runner's ``Algorithm`` protocol).

    Holds only static configuration; ``init`` and ``step`` are pure functions of their inputs.
    """

    def __init__(self, config: MapElitesConfig, task, hyper: MutationHyper | None = None):
        validate(config, task)
        self.config = config
        self.task = task
        self.hyper = hyper if hyper is not None else MutationHyper()

    def init(self, key: jax.Array) -> MapElitesState:
        return init(key, self.task, self.config, self.hyper)

    def step(self, key: jax.Array, state: MapElitesState):
        return step(key, state, self.task, self.config, self.hyper)
