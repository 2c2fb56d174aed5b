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
    >>> hyper = algorithm.default_hyper.replace(sigma=0.1)
    >>> state = algorithm.init(jax.random.key(0), hyper)
    >>> state, metrics = algorithm.step(jax.random.key(1), state, hyper)
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
        mutation_block: mutate the offspring this many at a time (``lax.map``) instead of all
            at once (``None``, the default); the same random draws, and the same offspring in
            every configuration tested (compiled; ``jit``). The mutation draws several random
            words per weight and XLA keeps them live together, so the generation's scratch
            memory grows with ``batch x weights``; blocks bound it at some cost in compile time,
            and in speed when the evaluation is cheap. Measured on 2 CPU cores: hopper 16-16 at
            batch 1024, blocks of 63 halve XLA's scratch (17.1 -> 8.7 MiB) at the same speed but
            compile 1.5 s longer; the kinematic arm (MLP genotype, batch 512, blocks of 151) runs
            1.5x slower (`python benchmarks/mutation_block.py`).
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
    mutation_block: int | None = None

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
        if self.mutation_block is not None and (
                isinstance(self.mutation_block, bool) or not isinstance(self.mutation_block, int)
                or self.mutation_block < 1):
            raise ValueError(f"mutation_block must be an integer >= 1 or None, got "
                             f"{self.mutation_block!r}")


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
    """The mutation emitter: uniform parents from filled cells, composite mutation.

    With ``config.mutation_block`` set, offspring are mutated that many at a time
    (``lax.map``): every child has its own key, so the draws are those of one ``vmap`` over the
    batch (and the compiled offspring equal in every configuration tested).
    """
    key_parents, key_mutate = jax.random.split(key)
    parents = sample(key_parents, archive, config.batch_size)
    keys = jax.random.split(key_mutate, config.batch_size)
    mutate_one = lambda k, parent: mutate(k, parent, task.maskable(), config.mutation, hyper,
                                          task.spec)
    block = config.mutation_block
    if block is None or block >= config.batch_size:
        return jax.vmap(mutate_one)(keys, parents)
    return jax.lax.map(lambda pair: mutate_one(*pair), (keys, parents), batch_size=block)


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


@dataclasses.dataclass(frozen=True)
class MapElites:
    """MAP-Elites synaptic pruning on a task (the runner's ``Algorithm`` protocol).

    Holds only static structure (hashable: runs of a sweep with equal ``config`` and ``task``
    share one compiled program); the numeric knobs are the
    :class:`~synprune_jax.variation.MutationHyper` passed to every call.

    Args:
        config: :class:`MapElitesConfig`.
        task: the evaluation task (its descriptor count must match the archive's).
    """

    config: MapElitesConfig
    task: object

    def __post_init__(self):
        validate(self.config, self.task)

    @property
    def default_hyper(self) -> MutationHyper:
        """``MutationHyper()``: the library's default rates and sigma."""
        return MutationHyper()

    def init(self, key: jax.Array, hyper: MutationHyper) -> MapElitesState:
        """Seeds an archive with ``initial_batch_size`` random individuals."""
        config, task = self.config, self.task
        key_population, key_eval = jax.random.split(key)
        size = config.initial_batch_size or config.batch_size
        population = random_population(key_population, task, config, hyper, size)
        template = jax.tree_util.tree_map(lambda leaf: leaf[0], population)
        archive = init_archive(config.archive, template)
        result = task.evaluate(key_eval, population)
        archive, _ = add(config.archive, archive, population, result)
        return MapElitesState(archive=archive, generation=jnp.zeros((), jnp.int32),
                              num_evaluations=jnp.asarray(size, jnp.int32))

    def step(self, key: jax.Array, state: MapElitesState,
             hyper: MutationHyper) -> tuple[MapElitesState, dict[str, jax.Array]]:
        """One generation: emit, evaluate, insert. Pure; the caller jits / scans it."""
        config, task = self.config, self.task
        key_emit, key_eval = jax.random.split(key)
        offspring = emit(key_emit, state.archive, task, config, hyper)
        result = task.evaluate(key_eval, offspring)
        archive, inserted = add(config.archive, state.archive, offspring, result)
        state = MapElitesState(archive=archive, generation=state.generation + 1,
                               num_evaluations=state.num_evaluations + config.batch_size)
        metrics = _metrics(config, archive, offspring, result, inserted)
        metrics["num_evaluations"] = state.num_evaluations
        return state, metrics


# ----- ES emitter (ME-ES style) ----------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class ESEmitterConfig:
    """Static configuration of the ES emitter of :class:`MapElitesES`.

    The emitter runs one evosax strategy (:class:`~synprune_jax.algorithms.es.MaskedStrategy`)
    centred on an archive elite, with that elite's masks; its samples are offspring like any
    others (inserted into the archive) and their fitness updates the strategy. Every
    ``restart_every`` generations it restarts on a new uniformly drawn elite.

    Attributes:
        strategy: a distribution-based evosax strategy (OpenES, CMA-ES, SNES, PGPE, ARS, ...).
        population_size: ES samples per generation (even for OpenES).
        sigma_init: search std.
        learning_rate: optimizer learning rate (strategies with an optimizer).
        optimizer: ``"adam"`` or ``"sgd"``.
        search_space: ``"unmasked"`` (only the elite's active weights) or ``"all"``.
        restart_every: generations between restarts on a new elite.
        use_mutation_emitter: also emit ``MapElitesConfig.batch_size`` mutated offspring each
            generation (the two emitters mixed in one run); False: ES offspring only.
    """

    strategy: str = "open_es"
    population_size: int = 32
    sigma_init: float = 0.05
    learning_rate: float = 0.05
    optimizer: str = "adam"
    search_space: str = "unmasked"
    restart_every: int = 10
    use_mutation_emitter: bool = True

    def __post_init__(self):
        from synprune_jax.algorithms import es as es_lib

        if es_lib.is_population_based(self.strategy):
            raise ValueError(f"the ES emitter needs a distribution-based strategy, got "
                             f"{self.strategy!r}")
        if self.population_size < 2:
            raise ValueError(f"population_size must be >= 2, got {self.population_size}")
        if self.restart_every < 1:
            raise ValueError(f"restart_every must be >= 1, got {self.restart_every}")
        if self.sigma_init <= 0 or self.learning_rate <= 0:
            raise ValueError("sigma_init and learning_rate must be > 0")


@struct.dataclass
class MapElitesESState:
    """State of :class:`MapElitesES`: the MAP-Elites fields plus the ES emitter's.

    Attributes:
        archive: the archive.
        generation: int32 scalar.
        num_evaluations: int32 scalar.
        es_state: evosax state of the emitter (flat vectors of the network size).
        es_masks: masks of the elite the emitter is improving (one network).
        es_rates: ``[2]`` that elite's mutation rates (passed on to ES offspring).
        es_age: int32, generations since the emitter's last restart.
    """

    archive: Archive
    generation: jax.Array
    num_evaluations: jax.Array
    es_state: object
    es_masks: object
    es_rates: jax.Array
    es_age: jax.Array


@struct.dataclass
class MapElitesESHyper:
    """Traced hyper-parameters of :class:`MapElitesES` (what a sweep may vmap over).

    Attributes:
        mutation: the mutation emitter's :class:`~synprune_jax.variation.MutationHyper`.
        sigma_init: the ES emitter's search std (``ESEmitterConfig.sigma_init``).
        learning_rate: the ES emitter's optimizer step (``ESEmitterConfig.learning_rate``).
    """

    mutation: MutationHyper
    sigma_init: float
    learning_rate: float


class MapElitesES:
    """MAP-Elites with an ES emitter, alone or mixed with the mutation emitter.

    One generation: the mutation emitter's ``config.batch_size`` offspring (if
    ``use_mutation_emitter``) and the ES emitter's ``population_size`` samples are evaluated in
    one batch and inserted together; the ES is told its samples' fitness; on restart generations
    the ES re-centres on a uniformly drawn elite. ``init`` is MAP-Elites' :func:`init` followed
    by the emitter's first centring.
    """

    def __init__(self, config: MapElitesConfig, emitter: ESEmitterConfig, task,
                 hyper: MutationHyper | None = None):
        from synprune_jax.algorithms import es as es_lib

        validate(config, task)
        self.config = config
        self.emitter = emitter
        self.task = task
        self.hyper = hyper if hyper is not None else MutationHyper()
        template = jax.eval_shape(task.init_params, jax.random.key(0))
        template = jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), template)
        self.adapter = es_lib.MaskedStrategy(
            emitter.strategy, emitter.population_size, template,
            search_space=emitter.search_space, sigma_init=emitter.sigma_init,
            optimizer=emitter.optimizer, learning_rate=emitter.learning_rate)

    # ----- sweeps (sweeps.HyperAdapter) --------------------------------------------------------
    @property
    def sweep_hyper(self) -> MapElitesESHyper:
        """The algorithm's own traced hyper-parameters."""
        return MapElitesESHyper(mutation=self.hyper, sigma_init=self.emitter.sigma_init,
                                learning_rate=self.emitter.learning_rate)

    def sweep_static(self):
        """Hashable key of what fixes the compiled program (everything but the hyper)."""
        emitter = dataclasses.replace(self.emitter, sigma_init=1.0, learning_rate=1.0)
        return ("map_elites_es", self.config, emitter, self.task)

    def _strategy(self, hyper: MapElitesESHyper):
        return self.adapter.with_hyper(hyper.sigma_init, 0.0, hyper.learning_rate)

    # ----- protocol ----------------------------------------------------------------------------
    def _centre(self, key: jax.Array, archive: Archive, adapter=None):
        adapter = self.adapter if adapter is None else adapter
        key_pick, key_init = jax.random.split(key)
        elite = sample(key_pick, archive, 1)[0]
        es_state = adapter.init(key_init, elite.params, elite.masks)
        es_state = jax.tree_util.tree_map(
            lambda leaf: jax.lax.convert_element_type(leaf, leaf.dtype), es_state)
        return es_state, elite.masks, elite.rates

    def init(self, key: jax.Array) -> MapElitesESState:
        return self.init_with(key, self.sweep_hyper)

    def init_with(self, key: jax.Array, hyper: MapElitesESHyper) -> MapElitesESState:
        """:meth:`init` with the given (possibly traced) hyper-parameters."""
        key_me, key_es = jax.random.split(key)
        base = init(key_me, self.task, self.config, hyper.mutation)
        es_state, es_masks, es_rates = self._centre(key_es, base.archive, self._strategy(hyper))
        return MapElitesESState(archive=base.archive, generation=base.generation,
                                num_evaluations=base.num_evaluations, es_state=es_state,
                                es_masks=es_masks, es_rates=es_rates,
                                es_age=jnp.zeros((), jnp.int32))

    def step(self, key: jax.Array, state: MapElitesESState):
        return self.step_with(key, state, self.sweep_hyper)

    def step_with(self, key: jax.Array, state: MapElitesESState, hyper: MapElitesESHyper):
        """:meth:`step` with the given (possibly traced) hyper-parameters."""
        config, emitter, adapter = self.config, self.emitter, self._strategy(hyper)
        key_emit, key_ask, key_eval, key_tell, key_restart = jax.random.split(key, 5)
        samples, es_state = adapter.ask(key_ask, state.es_state, state.es_masks)
        num_es = emitter.population_size
        es_offspring = Population(
            params=adapter.unravel_population(samples),
            masks=jax.tree_util.tree_map(lambda m: jnp.broadcast_to(m, (num_es, *m.shape)),
                                         state.es_masks),
            rates=jnp.broadcast_to(state.es_rates, (num_es, 2)))
        if emitter.use_mutation_emitter:
            mutated = emit(key_emit, state.archive, self.task, config, hyper.mutation)
            offspring = jax.tree_util.tree_map(lambda a, b: jnp.concatenate([a, b]), mutated,
                                               es_offspring)
        else:
            offspring = es_offspring
        result = self.task.evaluate(key_eval, offspring)
        archive, inserted = add(config.archive, state.archive, offspring, result)
        es_fitness = result.fitness[-num_es:]
        es_state, _ = adapter.tell(key_tell, samples, es_fitness, es_state, state.es_masks)
        es_state = jax.tree_util.tree_map(
            lambda leaf: jax.lax.convert_element_type(leaf, leaf.dtype), es_state)

        age = state.es_age + 1
        restart = age >= emitter.restart_every
        fresh_state, fresh_masks, fresh_rates = self._centre(key_restart, archive, adapter)
        pick = lambda new, old: jnp.where(restart, new, old)
        es_state = jax.tree_util.tree_map(pick, fresh_state, es_state)
        es_masks = jax.tree_util.tree_map(pick, fresh_masks, state.es_masks)
        es_rates = pick(fresh_rates, state.es_rates)
        count = offspring.size
        new_state = MapElitesESState(
            archive=archive, generation=state.generation + 1,
            num_evaluations=state.num_evaluations + count, es_state=es_state, es_masks=es_masks,
            es_rates=es_rates, es_age=jnp.where(restart, 0, age).astype(jnp.int32))
        metrics = _metrics(config, archive, offspring, result, inserted)
        metrics["num_evaluations"] = new_state.num_evaluations
        metrics["es_num_inserted"] = jnp.sum(inserted[-num_es:], dtype=jnp.int32)
        metrics["es_max_fitness"] = jnp.max(jnp.where(jnp.isfinite(es_fitness), es_fitness,
                                                      -jnp.inf))
        return new_state, metrics
