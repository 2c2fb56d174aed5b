"""MAP-Elites synaptic pruning.

One generation (:meth:`MapElites.step`) is pure and jittable; the offspring come from an emitter
(:mod:`synprune_jax.algorithms.emitters`), by default the mutation emitter:

    key_emit, key_eval = split(key)
    children = emitter.emit(key_emit, archive)   # uniform parents from filled cells, vmap(mutate)
    result   = task.evaluate(key_eval, children)                    fitness [B], descriptors [B, D]
    archive  = add(archive, children, result)                       one scatter per leaf
    emitter  = emitter.update(key_emit, children, result)           (the ES emitter learns here)

The archive is seeded with ``initial_batch_size`` random networks of per-layer density
``~ Beta(init_beta_a, init_beta_b)``. Static structure lives in :class:`MapElitesConfig` and the
emitter; numeric knobs in the traced hyper (:class:`~synprune_jax.variation.MutationHyper`, or
:class:`~synprune_jax.algorithms.emitters.MapElitesESHyper` with an ES emitter:
:func:`MapElitesES`).

Example (kinematic arm):
    >>> import jax
    >>> from synprune_jax.tasks import KinematicArm
    >>> from synprune_jax.archives import GridSpec
    >>> task = KinematicArm(num_joints=4, genotype="mlp")
    >>> config = MapElitesConfig(batch_size=32, archive=GridSpec((0.0, 0.0), (1.0, 1.0), (8, 8)))
    >>> algorithm = MapElites(config, task)
    >>> hyper = algorithm.default_hyper.replace(sigma=0.1)
    >>> state = jax.jit(algorithm.init)(jax.random.key(0), hyper)
    >>> state, metrics = jax.jit(algorithm.step)(jax.random.key(1), state, hyper)
    >>> int(state.generation)
    1
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import struct

from synprune_jax import variation
from synprune_jax.algorithms.emitters import (
    Emitter,
    ESEmitter,
    ESEmitterConfig,
    MixEmitter,
    MutationEmitter,
    check_mutation_block,
    mutation_hyper,
)
from synprune_jax.archives import Archive, CVTSpec, GridSpec, add, init_archive, qd_metrics
from synprune_jax.tasks.base import Task
from synprune_jax.types import EvalResult, Population
from synprune_jax.variation import MutationConfig, MutationHyper

ArchiveSpec = GridSpec | CVTSpec


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
        mutation_block: the mutation emitter's ``mutation_block`` (:class:`MutationEmitter`):
            mutate the offspring this many at a time (``None``: all at once).

    Raises:
        TypeError: ``archive`` is not a ``GridSpec`` or ``CVTSpec``.
        ValueError: ``batch_size`` or ``initial_batch_size`` < 1, a Beta parameter <= 0, a
            density band outside (0, 1], or a ``mutation_block`` that is not None or >= 1.

    Examples:
        >>> from synprune_jax.archives import GridSpec
        >>> config = MapElitesConfig(archive=GridSpec((0.0, 0.0), (1.0, 1.0), (4, 4)), batch_size=8)
        >>> config.initial_batch_size, config.archive.num_descriptors, config.density_bands
        (None, 2, (0.1, 0.25, 0.5, 1.0))
        >>> MapElitesConfig(archive=(4, 4))
        Traceback (most recent call last):
        ...
        TypeError: archive must be a GridSpec or CVTSpec, got <class 'tuple'>
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
        check_mutation_block(self.mutation_block)


class MapElitesState(struct.PyTreeNode):
    """Algorithm state: the archive and counters (no PRNG keys: they derive from the seed).

    With an emitter that has state (its ``init`` returns other than ``None``) the state is a
    :class:`MapElitesEmitterState`, which adds ``emitter_state``.

    Attributes:
        archive: the :class:`~synprune_jax.archives.Archive` of ``C`` cells (genome leaves
            ``[C, ...]``, ``fitness [C]`` float32 with ``-inf`` in empty cells,
            ``descriptors [C, D]``, ``density [C]``, ``centroids [C, D]``).
        evaluated_at: ``[C]`` int32, the generation whose evaluation gave each elite its
            fitness (0: the seeding batch, ``g``: the step into generation ``g``; -1 when the
            cell is empty, or for elites of a checkpoint written before this field existed).
            With the run's seed it gives the elite's evaluation key (:meth:`MapElites.evaluation`),
            so an elite can be replayed to its archived fitness (:func:`synprune_jax.replay`).
        generation: int32 scalar, generations stepped.
        num_evaluations: int32 scalar, individuals evaluated (the seeding batch included).

    Examples:
        >>> from synprune_jax.archives import GridSpec
        >>> from synprune_jax.tasks import KinematicArm
        >>> config = MapElitesConfig(archive=GridSpec((0.0, 0.0), (1.0, 1.0), (2, 2)), batch_size=4,
        ...                          mutation=MutationConfig(forward_prune=False))
        >>> algorithm = MapElites(config, KinematicArm(num_joints=3))  # genes {"angles": [3]}
        >>> state = jax.eval_shape(algorithm.init, jax.random.key(0), algorithm.default_hyper)
        >>> jax.tree.map(jnp.shape, state)  # doctest: +NORMALIZE_WHITESPACE
        MapElitesState(archive=Archive(genomes=Population(params={'angles': (4, 3)},
                                                          masks={'angles': (4, 3)},
                                                          rates=(4, 2)),
                                       fitness=(4,), descriptors=(4, 2), density=(4,),
                                       centroids=(4, 2)),
                       evaluated_at=(4,), generation=(), num_evaluations=())
    """

    archive: Archive
    evaluated_at: jax.Array  # [C] int32
    generation: jax.Array  # int32 scalar
    num_evaluations: jax.Array  # int32 scalar


class MapElitesEmitterState(MapElitesState):
    """:class:`MapElitesState` plus the state of the emitter (e.g. the ES emitter's)."""

    emitter_state: object


def _state(emitter_state, **counters) -> MapElitesState:
    if emitter_state is None:
        return MapElitesState(**counters)
    return MapElitesEmitterState(**counters, emitter_state=emitter_state)


def random_population(
    key: jax.Array, task, config: MapElitesConfig, hyper: MutationHyper, size: int
) -> Population:
    """``size`` random networks with Beta-distributed per-layer densities
    (:func:`synprune_jax.variation.random_population` with ``config``'s settings); self-adaptive
    rates start log-uniform over ``[rate_min, rate_max]``."""
    return variation.random_population(
        key,
        task,
        size,
        jnp.stack([hyper.p_disconnect, hyper.p_connect]),
        beta_a=config.init_beta_a,
        beta_b=config.init_beta_b,
        exact=config.exact_init_density,
        per_layer=config.init_per_layer,
        forward_prune=config.mutation.forward_prune,
        rate_range=(hyper.rate_min, hyper.rate_max) if config.mutation.self_adaptive else None,
    )


def mutation_emitter(config: MapElitesConfig, task) -> MutationEmitter:
    """The mutation emitter of ``config`` (its ``batch_size``, ``mutation``, ``mutation_block``)."""
    return MutationEmitter(
        task,
        batch_size=config.batch_size,
        mutation=config.mutation,
        mutation_block=config.mutation_block,
    )


def emit(
    key: jax.Array, archive: Archive, task, config: MapElitesConfig, hyper: MutationHyper
) -> Population:
    """The offspring of ``mutation_emitter(config, task)`` (``[config.batch_size, ...]``)."""
    offspring, _ = mutation_emitter(config, task).emit(key, archive, None, hyper)
    return offspring


def _metrics(
    config: MapElitesConfig,
    archive: Archive,
    offspring: Population,
    result: EvalResult,
    inserted: jax.Array,
) -> dict[str, jax.Array]:
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

    Static and hashable (equal ``config``, ``task`` and ``emitter``: one compiled program); the
    numeric knobs are the hyper passed to every call. ``init(key, hyper)`` returns a
    :class:`MapElitesState`; ``step(key, state, hyper)`` returns ``(state, metrics)``, a dict of
    scalars: the archive's QD metrics (:func:`~synprune_jax.archives.qd_metrics`), the
    offspring's, then the emitter's.

    Args:
        config: :class:`MapElitesConfig`.
        task: the evaluation task (its descriptor count must match the archive's).
        emitter: where offspring come from (:mod:`synprune_jax.algorithms.emitters`); ``None``
            (the default) means ``mutation_emitter(config, task)``, and the hyper is then a
            :class:`~synprune_jax.variation.MutationHyper`.

    Raises:
        ValueError: the archive's descriptor dimension differs from the task's, or
            ``config.mutation.forward_prune`` meets a task without an MLP network.
        TypeError: the emitter lacks ``init``, ``emit``, ``update`` or ``check_hyper``.

    Examples:
        >>> from synprune_jax.archives import GridSpec
        >>> from synprune_jax.tasks import KinematicArm
        >>> task = KinematicArm(num_joints=3)  # descriptors: the tip's x and y
        >>> one_dimension = MapElitesConfig(archive=GridSpec((0.0,), (1.0,), (4,)))
        >>> MapElites(one_dimension, task)  # doctest: +NORMALIZE_WHITESPACE
        Traceback (most recent call last):
        ...
        ValueError: the archive has 1 descriptor dimensions but the task produces 2:
        ['end_effector_x', 'end_effector_y']
        >>> config = MapElitesConfig(archive=GridSpec((0.0, 0.0), (1.0, 1.0), (2, 2)), batch_size=4,
        ...                          mutation=MutationConfig(forward_prune=False))
        >>> algorithm = MapElites(config, task)
        >>> type(algorithm.emitter).__name__, algorithm.default_hyper.sigma
        ('MutationEmitter', 0.05)
        >>> key, hyper = jax.random.key(0), algorithm.default_hyper
        >>> state = jax.eval_shape(algorithm.init, key, hyper)  # shapes only, nothing runs
        >>> _, metrics = jax.eval_shape(algorithm.step, key, state, hyper)
        >>> sorted(metrics)  # doctest: +NORMALIZE_WHITESPACE
        ['best_fitness_density_le_10', 'best_fitness_density_le_100',
         'best_fitness_density_le_25', 'best_fitness_density_le_50', 'coverage', 'max_fitness',
         'mean_fitness', 'mean_p_connect', 'mean_p_disconnect', 'num_evaluations', 'num_filled',
         'num_inserted', 'num_invalid', 'offspring_max_fitness', 'offspring_mean_density',
         'qd_score']
    """

    config: MapElitesConfig
    task: Task
    # None (the default) is replaced by mutation_emitter(config, task) in __post_init__
    emitter: Emitter = None  # type: ignore[assignment]

    def __post_init__(self):
        config, task = self.config, self.task
        names = task.descriptor_names
        if config.archive.num_descriptors != len(names):
            raise ValueError(
                f"the archive has {config.archive.num_descriptors} descriptor "
                f"dimensions but the task produces {len(names)}: {list(names)}"
            )
        config.mutation.check_task(task)
        if self.emitter is None:
            object.__setattr__(self, "emitter", mutation_emitter(self.config, self.task))
        for method in ("init", "emit", "update", "check_hyper"):
            if not callable(getattr(self.emitter, method, None)):
                raise TypeError(
                    f"emitter {type(self.emitter).__name__} has no {method}() "
                    "(see synprune_jax.algorithms.emitters.Emitter)"
                )

    @property
    def default_hyper(self):
        """The emitter's default hyper (``MutationHyper()`` for the mutation emitter)."""
        return self.emitter.default_hyper

    def init(self, key: jax.Array, hyper) -> MapElitesState:
        """Seeds an archive with ``initial_batch_size`` random individuals, then the emitter.

        Draws: ``key_population, key_eval = split(key)``; the emitter's ``init`` takes no key.

        Raises:
            TypeError: the emitter cannot read ``hyper`` (its ``check_hyper``).
        """
        config, task = self.config, self.task
        self.emitter.check_hyper(hyper)
        key_population, key_eval = jax.random.split(key)  # evaluation() mirrors this split
        size = config.initial_batch_size or config.batch_size
        population = random_population(key_population, task, config, mutation_hyper(hyper), size)
        template = jax.tree_util.tree_map(lambda leaf: leaf[0], population)
        archive = init_archive(config.archive, template)
        result = task.evaluate(key_eval, population)
        archive, _ = add(config.archive, archive, population, result)
        return _state(
            self.emitter.init(archive, hyper),
            archive=archive,
            evaluated_at=jnp.where(archive.filled, 0, -1).astype(jnp.int32),
            generation=jnp.zeros((), jnp.int32),
            num_evaluations=jnp.asarray(size, jnp.int32),
        )

    def step(
        self, key: jax.Array, state: MapElitesState, hyper
    ) -> tuple[MapElitesState, dict[str, jax.Array]]:
        """One generation: emit, evaluate, insert, update the emitter. Pure; the caller jits /
        scans it. Metrics: the archive's QD metrics, the offspring's, then the emitter's.

        Raises:
            ValueError: the emitter reports a metric named like one of MAP-Elites' own.
        """
        config, task, emitter = self.config, self.task, self.emitter
        key_emit, key_eval = jax.random.split(key)  # evaluation() mirrors this split
        emitter_state = getattr(state, "emitter_state", None)
        offspring, emitter_state = emitter.emit(key_emit, state.archive, emitter_state, hyper)
        result = task.evaluate(key_eval, offspring)
        archive, inserted = add(config.archive, state.archive, offspring, result)
        emitter_state, emitter_metrics = emitter.update(
            key_emit, emitter_state, offspring, result, inserted, hyper
        )
        # an insertion always raises the cell's fitness strictly (add's rule 3)
        replaced = archive.fitness != state.archive.fitness
        state = _state(
            emitter_state,
            archive=archive,
            evaluated_at=jnp.where(replaced, state.generation + 1, state.evaluated_at),
            generation=state.generation + 1,
            num_evaluations=state.num_evaluations + emitter.batch_size,
        )
        metrics = _metrics(config, archive, offspring, result, inserted)
        metrics["num_evaluations"] = state.num_evaluations
        clash = sorted(set(metrics) & set(emitter_metrics))
        if clash:
            raise ValueError(f"the emitter reports metrics named like MAP-Elites' own: {clash}")
        metrics.update(emitter_metrics)
        return state, metrics

    def evaluation(self, key: jax.Array, generation: int) -> tuple[jax.Array, int]:
        """How the individuals evaluated at ``generation`` were evaluated, for replaying them.

        Args:
            key: the key :meth:`init` got (``generation == 0``) or the key of the step into
                ``generation`` (the runner's ``generation_key(seed, generation - 1)``).
            generation: a value of :attr:`MapElitesState.evaluated_at` (>= 0).

        Returns:
            ``(key_eval, batch_size)``: the key passed to ``task.evaluate`` and the size of that
            batch (the seeding batch at generation 0, else the emitter's batch).

        Examples:
            >>> from synprune_jax.archives import GridSpec
            >>> from synprune_jax.tasks import KinematicArm
            >>> config = MapElitesConfig(archive=GridSpec((0.0, 0.0), (1.0, 1.0), (2, 2)),
            ...                          batch_size=4, initial_batch_size=6,
            ...                          mutation=MutationConfig(forward_prune=False))
            >>> algorithm = MapElites(config, KinematicArm(num_joints=3))
            >>> [algorithm.evaluation(jax.random.key(0), g)[1] for g in (0, 1, 2)]
            [6, 4, 4]
        """
        size = self.config.initial_batch_size or self.config.batch_size
        return jax.random.split(key)[1], size if generation == 0 else self.emitter.batch_size


# ----- ES emitter (ME-ES style) ----------------------------------------------------------------


def MapElitesES(config: MapElitesConfig, emitter: ESEmitterConfig, task) -> MapElites:
    """MAP-Elites with an ES emitter, alone or mixed with the mutation emitter.

    A :class:`MapElites` whose emitter is ``MixEmitter((mutation_emitter(config, task),
    ESEmitter(emitter, task)))`` when ``emitter.use_mutation_emitter`` (``config.batch_size``
    mutated and ``emitter.population_size`` ES offspring per generation, evaluated in one batch
    and inserted together), else ``ESEmitter(emitter, task)`` alone (a run: the module
    docstring of :mod:`~synprune_jax.algorithms.emitters`). Its hyper is a
    :class:`~synprune_jax.algorithms.emitters.MapElitesESHyper`; extra metrics
    ``es_num_inserted`` and ``es_max_fitness``; its state a :class:`MapElitesEmitterState`.

    Args:
        config: :class:`MapElitesConfig` (archive, seeding and the mutation emitter).
        emitter: :class:`~synprune_jax.algorithms.emitters.ESEmitterConfig` of the ES emitter.
        task: the evaluation task.

    Returns:
        The :class:`MapElites` algorithm.

    Raises:
        ValueError: what :class:`~synprune_jax.algorithms.emitters.ESEmitter` (an unknown
            ``search_space`` or ``optimizer``) and :class:`MapElites` raise.

    Examples:
        >>> from synprune_jax.archives import GridSpec
        >>> from synprune_jax.tasks import KinematicArm
        >>> config = MapElitesConfig(archive=GridSpec((0.0, 0.0), (1.0, 1.0), (2, 2)), batch_size=4,
        ...                          mutation=MutationConfig(forward_prune=False))
        >>> task = KinematicArm(num_joints=3)
        >>> algorithm = MapElitesES(config, ESEmitterConfig(population_size=6), task)
        >>> type(algorithm.emitter).__name__, algorithm.emitter.batch_size  # 4 mutated + 6 ES
        ('MixEmitter', 10)
        >>> type(algorithm.default_hyper).__name__
        'MapElitesESHyper'
        >>> alone = ESEmitterConfig(population_size=6, use_mutation_emitter=False)
        >>> type(MapElitesES(config, alone, task).emitter).__name__
        'ESEmitter'
        >>> state = jax.eval_shape(algorithm.init, jax.random.key(0), algorithm.default_hyper)
        >>> type(state).__name__, state.emitter_state[1].age.dtype  # (mutation's, ES') states
        ('MapElitesEmitterState', dtype('int32'))
    """
    es_emitter = ESEmitter(emitter, task)
    if emitter.use_mutation_emitter:
        return MapElites(config, task, MixEmitter((mutation_emitter(config, task), es_emitter)))
    return MapElites(config, task, es_emitter)
