"""Emitters for MAP-Elites: where each generation's offspring come from.

An emitter is a static, hashable object (a frozen dataclass) with pure methods (the
:class:`Emitter` protocol); its state is a pytree without PRNG keys, carried in the MAP-Elites
state. :class:`~synprune_jax.algorithms.map_elites.MapElites` drives it, one generation at a
time:

    key_emit, key_eval = split(key)
    offspring, emitter_state = emitter.emit(key_emit, archive, emitter_state, hyper)    [B]
    result = task.evaluate(key_eval, offspring)
    archive, inserted = add(archive, offspring, result)
    emitter_state, metrics = emitter.update(key_emit, emitter_state, offspring, result,
                                            inserted, hyper)

``emit`` and ``update`` of one generation receive the **same** key; an emitter that draws in
both splits it the same way in both and uses disjoint parts. ``init`` takes no key, so
MAP-Elites' own draws are those of the mutation-only algorithm. The hyper is one pytree shared
by MAP-Elites and its emitters; each reads the fields it needs. Emitters here:
:class:`MutationEmitter`, :class:`ESEmitter` and :class:`MixEmitter` (several at once).

Example (mutation and ES offspring in one generation):
    >>> import jax
    >>> from synprune_jax.archives import GridSpec
    >>> from synprune_jax.tasks import KinematicArm
    >>> from synprune_jax.algorithms.map_elites import MapElites, MapElitesConfig
    >>> task = KinematicArm(num_joints=4, genotype="mlp")
    >>> config = MapElitesConfig(batch_size=16, archive=GridSpec((0.0, 0.0), (1.0, 1.0), (8, 8)))
    >>> emitter = MixEmitter((MutationEmitter(task, batch_size=16),
    ...                       ESEmitter(ESEmitterConfig(population_size=8), task)))
    >>> algorithm = MapElites(config, task, emitter)
    >>> hyper = algorithm.default_hyper          # MapElitesESHyper()
    >>> state = jax.jit(algorithm.init)(jax.random.key(0), hyper)
    >>> state, metrics = jax.jit(algorithm.step)(jax.random.key(1), state, hyper)
    >>> int(state.num_evaluations)  # 16 to seed the archive, then 16 mutated + 8 ES offspring
    40
"""

from __future__ import annotations

import dataclasses
from typing import Any, Protocol

import jax
import jax.numpy as jnp
from flax import struct

from synprune_jax import trees
from synprune_jax.archives import Archive, sample
from synprune_jax.types import EvalResult, Masks, Population
from synprune_jax.variation import MutationConfig, MutationHyper, mutate


class Emitter(Protocol):
    """What :class:`~synprune_jax.algorithms.map_elites.MapElites` needs of an emitter (call
    order and keys: module docstring)."""

    @property
    def batch_size(self) -> int:
        """Offspring per generation ``B`` (static)."""

    @property
    def default_hyper(self) -> Any:
        """A hyper-parameter pytree the emitter can read, with default values."""

    def check_hyper(self, hyper: Any) -> None:
        """Raises ``TypeError`` when ``hyper`` lacks what the emitter reads."""

    def init(self, archive: Archive, hyper: Any) -> Any:
        """The state, once the archive is seeded (``None``: no state)."""

    def emit(
        self, key: jax.Array, archive: Archive, state: Any, hyper: Any
    ) -> tuple[Population, Any]:
        """``(offspring, state)``: ``B`` individuals."""

    def update(
        self,
        key: jax.Array,
        state: Any,
        offspring: Population,
        result: EvalResult,
        inserted: jax.Array,
        hyper: Any,
    ) -> tuple[Any, dict[str, jax.Array]]:
        """``(state, metrics)`` after the evaluation (``[B]`` fitness) and the insertion
        (``inserted [B]`` bool); ``metrics``: scalars reported with the generation's."""


def mutation_hyper(hyper: Any) -> MutationHyper:
    """The :class:`~synprune_jax.variation.MutationHyper` of a MAP-Elites hyper: ``hyper``
    itself, or its ``mutation`` field.

    Raises:
        TypeError: ``hyper`` is neither.
    """
    if isinstance(hyper, MutationHyper):
        return hyper
    inner = getattr(hyper, "mutation", None)
    if isinstance(inner, MutationHyper):
        return inner
    raise TypeError(
        f"expected a MutationHyper or a hyper with a MutationHyper `mutation` field, "
        f"got {type(hyper).__name__}"
    )


# ----- mutation emitter -------------------------------------------------------------------------


def check_mutation_block(value) -> None:
    """Raises ``ValueError`` unless ``value`` is ``None`` or an integer >= 1 (the
    ``mutation_block`` of :class:`MutationEmitter` and of ``MapElitesConfig``)."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ValueError(f"mutation_block must be an integer >= 1 or None, got {value!r}")


@dataclasses.dataclass(frozen=True)
class MutationEmitter:
    """Uniform parents from the filled cells, each mutated by the composite mutation.

    Stateless (``init`` returns ``None``). Draws: ``key_parents, key_mutate = split(key)``;
    ``sample(key_parents, archive, batch_size)`` picks the parents, child ``i`` is mutated with
    ``split(key_mutate, batch_size)[i]``.

    ``emit(key, archive, None, hyper)`` returns ``(offspring, None)``, the offspring a
    :class:`~synprune_jax.types.Population` whose leaves are ``[batch_size, ...]`` (rates
    ``[batch_size, 2]`` float32); ``hyper`` is a ``MutationHyper`` or has one as ``mutation``.

    Args:
        task: the task (its ``maskable()`` and, for forward pruning, its ``spec``).
        batch_size: offspring per generation.
        mutation: static structure of the mutation (self-adaptive rates, forward pruning).
        mutation_block: mutate the offspring this many at a time (``lax.map``; the same
            offspring as one ``vmap``, with less scratch memory, slower) instead of all at once
            (``None``).

    Raises:
        ValueError: ``batch_size`` is not an integer >= 1, ``mutation_block`` is not None or an
            integer >= 1, or ``mutation.forward_prune`` meets a task without an MLP network.

    Examples:
        >>> from synprune_jax.archives import GridSpec, init_archive
        >>> from synprune_jax.tasks import KinematicArm
        >>> from synprune_jax.types import Population
        >>> task = KinematicArm(num_joints=3)  # genes {"angles": [3]}, a direct genotype
        >>> one = Population({"angles": jnp.zeros(3)}, {"angles": jnp.ones(3, bool)}, jnp.zeros(2))
        >>> archive = init_archive(GridSpec((0.0, 0.0), (1.0, 1.0), (2, 2)), one)  # 4 cells
        >>> MutationEmitter(task, batch_size=4)  # doctest: +NORMALIZE_WHITESPACE
        Traceback (most recent call last):
        ...
        ValueError: mutation.forward_prune needs an MLP network; this task has a direct genotype
        (set forward_prune=False)
        >>> no_forward = MutationConfig(forward_prune=False)
        >>> emitter = MutationEmitter(task, batch_size=4, mutation=no_forward)
        >>> hyper = emitter.default_hyper
        >>> emitter.init(archive, hyper) is None  # stateless
        True
        >>> offspring, state = jax.eval_shape(emitter.emit, jax.random.key(0), archive, None, hyper)
        >>> jax.tree.map(jnp.shape, offspring), state  # shapes only, nothing runs
        (Population(params={'angles': (4, 3)}, masks={'angles': (4, 3)}, rates=(4, 2)), None)
    """

    task: Any
    batch_size: int = 256
    mutation: MutationConfig = MutationConfig()
    mutation_block: int | None = None

    def __post_init__(self):
        if (
            isinstance(self.batch_size, bool)
            or not isinstance(self.batch_size, int)
            or self.batch_size < 1
        ):
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size!r}")
        check_mutation_block(self.mutation_block)
        self.mutation.check_task(self.task)

    @property
    def default_hyper(self) -> MutationHyper:
        """``MutationHyper()``."""
        return MutationHyper()

    def check_hyper(self, hyper: Any) -> None:
        """Raises ``TypeError`` unless :func:`mutation_hyper` finds a ``MutationHyper``."""
        mutation_hyper(hyper)

    def init(self, archive: Archive, hyper: Any) -> None:
        """No state."""
        return None

    def emit(
        self, key: jax.Array, archive: Archive, state: None, hyper: Any
    ) -> tuple[Population, None]:
        """``batch_size`` mutated copies of uniformly drawn elites (every leaf ``[B, ...]``)."""
        hyper = mutation_hyper(hyper)
        key_parents, key_mutate = jax.random.split(key)
        parents = sample(key_parents, archive, self.batch_size)
        keys = jax.random.split(key_mutate, self.batch_size)
        maskable = self.task.maskable()
        mutate_one = lambda k, parent: mutate(
            k, parent, maskable, self.mutation, hyper, self.task.spec
        )
        block = self.mutation_block
        if block is None or block >= self.batch_size:
            return jax.vmap(mutate_one)(keys, parents), state
        return jax.lax.map(lambda pair: mutate_one(*pair), (keys, parents), batch_size=block), state

    def update(self, key, state, offspring, result, inserted, hyper):
        """Nothing to learn: ``(None, {})``."""
        return state, {}


# ----- ES emitter -------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ESEmitterConfig:
    """Static configuration of :class:`ESEmitter` (its traced knobs are in
    :class:`MapElitesESHyper`).

    Attributes:
        strategy: a distribution-based evosax strategy (OpenES, CMA-ES, SNES, PGPE, ARS, ...).
        population_size: ES samples per generation (even for OpenES).
        optimizer: ``"adam"`` or ``"sgd"``.
        search_space: ``"unmasked"`` (only the elite's active weights) or ``"all"``.
        restart_every: generations between re-centrings on a new elite.
        use_mutation_emitter: read by :func:`~synprune_jax.algorithms.map_elites.MapElitesES`:
            mix the ES emitter with the mutation emitter (True) or use it alone (False).

    Raises:
        ValueError: an unknown or population-based ``strategy``, an unknown ``optimizer`` or
            ``search_space``, ``population_size`` < 2 (or one the strategy refuses: odd for
            OpenES, PGPE, ARS, ...; :func:`~synprune_jax.algorithms.es.check_population_size`), or
            ``restart_every`` < 1.

    Examples:
        >>> config = ESEmitterConfig(population_size=8, restart_every=5)
        >>> config.strategy, config.search_space, config.use_mutation_emitter
        ('open_es', 'unmasked', True)
        >>> ESEmitterConfig(strategy="de")
        Traceback (most recent call last):
        ...
        ValueError: the ES emitter needs a distribution-based strategy, got 'de'
    """

    strategy: str = "open_es"
    population_size: int = 32
    optimizer: str = "adam"
    search_space: str = "unmasked"
    restart_every: int = 10
    use_mutation_emitter: bool = True

    def __post_init__(self):
        from synprune_jax.algorithms import es as es_lib

        if es_lib.is_population_based(self.strategy):
            raise ValueError(
                f"the ES emitter needs a distribution-based strategy, got {self.strategy!r}"
            )
        for name, valid in (
            ("optimizer", es_lib.OPTIMIZERS),
            ("search_space", es_lib.SEARCH_SPACES),
        ):
            if getattr(self, name) not in valid:
                raise ValueError(
                    f"{name} must be one of {list(valid)}, got {getattr(self, name)!r}"
                )
        if self.population_size < 2:
            raise ValueError(f"population_size must be >= 2, got {self.population_size}")
        es_lib.check_population_size(self.strategy, self.population_size)
        if self.restart_every < 1:
            raise ValueError(f"restart_every must be >= 1, got {self.restart_every}")


class MapElitesESHyper(struct.PyTreeNode):
    """Traced hyper-parameters of MAP-Elites with an ES emitter (what a sweep may vmap over).

    A ``flax.struct`` pytree of scalars (``[R]`` arrays for ``R`` stacked runs); nothing is
    checked here: :func:`validate_es_hyper` checks ``sigma_init`` and ``learning_rate``.

    Attributes:
        mutation: :class:`~synprune_jax.variation.MutationHyper` of the mutation emitter and of
            the archive's random seeding.
        sigma_init: the ES emitter's initial search std (> 0).
        learning_rate: the ES emitter's optimizer step (> 0).

    Examples:
        >>> hyper = MapElitesESHyper(sigma_init=0.1)
        >>> jax.tree.leaves(hyper)  # the mutation's six knobs, then sigma_init, learning_rate
        [0.05, 0.02, 0.01, 0.1, 0.0001, 0.2, 0.1, 0.05]
        >>> mutation_hyper(hyper) is hyper.mutation  # what the mutation emitter reads
        True
        >>> validate_es_hyper(hyper.replace(learning_rate=0.0))
        Traceback (most recent call last):
        ...
        ValueError: sigma_init and learning_rate must be > 0
    """

    mutation: MutationHyper = struct.field(default_factory=MutationHyper)
    sigma_init: float = 0.05
    learning_rate: float = 0.05


def validate_es_hyper(hyper: MapElitesESHyper) -> None:
    """Raises ``ValueError`` unless ``sigma_init`` and ``learning_rate`` are > 0 (Python values,
    before anything compiles)."""
    if not (hyper.sigma_init > 0 and hyper.learning_rate > 0):
        raise ValueError("sigma_init and learning_rate must be > 0")


class ESEmitterState(struct.PyTreeNode):
    """State of :class:`ESEmitter` (no PRNG keys).

    Attributes:
        strategy: the evosax state (flat vectors of the network size ``N``).
        masks: masks of the elite the strategy is centred on (one network).
        rates: ``[2]`` that elite's mutation rates (passed on to the ES offspring).
        age: int32 scalar, generations told since the last centring; the next ``emit``
            re-centres when it reaches ``restart_every`` (``init`` sets it there, with zeros
            elsewhere).
    """

    strategy: Any
    masks: Masks
    rates: jax.Array
    age: jax.Array


@dataclasses.dataclass(frozen=True)
class ESEmitter:
    """One evosax strategy centred on an archive elite (ME-ES style).

    The strategy searches the elite's parameters with the elite's masks
    (:class:`~synprune_jax.algorithms.es.MaskedStrategy`); its ``population_size`` samples are
    offspring like any others, with the elite's masks and rates, and their fitness is told to the
    strategy. When ``restart_every`` generations have been told (and at the first ``emit``) it
    re-centres on a uniformly drawn elite of the current archive.

    Draws: ``key_centre, key_ask, key_tell = split(key, 3)``; centring is
    ``key_pick, key_init = split(key_centre)``, ``sample(key_pick, archive, 1)`` and the
    strategy's ``init(key_init, ...)``. Reads ``hyper.sigma_init`` and ``hyper.learning_rate``
    (:class:`MapElitesESHyper`; :meth:`strategy`).

    ``init(archive, hyper)`` returns an :class:`ESEmitterState`; ``emit(key, archive, state,
    hyper)`` returns ``(offspring, state)``, the offspring a
    :class:`~synprune_jax.types.Population` with leaves ``[population_size, ...]``.

    Args:
        config: :class:`ESEmitterConfig`.
        task: the task (its parameter template fixes the search dimension ``N``).

    Attributes:
        adapter: the :class:`~synprune_jax.algorithms.es.MaskedStrategy` built with
            :class:`MapElitesESHyper`'s default values (:meth:`strategy` rebinds it).

    Raises:
        ValueError: an unknown ``config.search_space`` or ``config.optimizer`` (from
            :class:`~synprune_jax.algorithms.es.MaskedStrategy`).

    Examples:
        >>> from synprune_jax.archives import GridSpec, init_archive
        >>> from synprune_jax.tasks import KinematicArm
        >>> from synprune_jax.types import Population
        >>> task = KinematicArm(num_joints=3)  # genes {"angles": [3]}, a direct genotype
        >>> one = Population({"angles": jnp.zeros(3)}, {"angles": jnp.ones(3, bool)}, jnp.zeros(2))
        >>> archive = init_archive(GridSpec((0.0, 0.0), (1.0, 1.0), (2, 2)), one)  # 4 cells
        >>> emitter = ESEmitter(ESEmitterConfig(population_size=4), task)
        >>> emitter.batch_size, emitter.adapter.num_dims  # P = 4 samples of N = 3 parameters
        (4, 3)
        >>> emitter.check_hyper(MutationHyper())  # doctest: +NORMALIZE_WHITESPACE
        Traceback (most recent call last):
        ...
        TypeError: the ES emitter reads hyper fields ['sigma_init', 'learning_rate'];
        MutationHyper has none (use MapElitesESHyper)
        >>> state = emitter.init(archive, emitter.default_hyper)  # zeros, due for centring
        >>> jax.tree.map(jnp.shape, state.replace(strategy=None)), int(state.age)
        (ESEmitterState(strategy=None, masks={'angles': (3,)}, rates=(2,), age=()), 10)
    """

    config: ESEmitterConfig
    task: Any
    adapter: Any = dataclasses.field(init=False, compare=False, repr=False)

    def __post_init__(self):
        from synprune_jax.algorithms import es as es_lib

        defaults = MapElitesESHyper()
        template = jax.eval_shape(self.task.init_params, jax.random.key(0))
        template = jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), template)
        adapter = es_lib.MaskedStrategy(
            self.config.strategy,
            self.config.population_size,
            template,
            search_space=self.config.search_space,
            sigma_init=defaults.sigma_init,
            optimizer=self.config.optimizer,
            learning_rate=defaults.learning_rate,
        )
        object.__setattr__(self, "adapter", adapter)

    @property
    def batch_size(self) -> int:
        """``config.population_size``."""
        return self.config.population_size

    @property
    def default_hyper(self) -> MapElitesESHyper:
        """``MapElitesESHyper()``."""
        return MapElitesESHyper()

    def check_hyper(self, hyper: Any) -> None:
        """Raises ``TypeError`` unless ``hyper`` has ``sigma_init`` and ``learning_rate``."""
        missing = [name for name in ("sigma_init", "learning_rate") if not hasattr(hyper, name)]
        if missing:
            raise TypeError(
                f"the ES emitter reads hyper fields {missing}; "
                f"{type(hyper).__name__} has none (use MapElitesESHyper)"
            )

    def strategy(self, hyper: Any):
        """The :class:`~synprune_jax.algorithms.es.MaskedStrategy` for ``hyper``'s
        ``sigma_init`` and ``learning_rate`` (rebuilt inside the trace when they are traced)."""
        self.check_hyper(hyper)
        return self.adapter.with_hyper(hyper.sigma_init, 0.0, hyper.learning_rate)

    def _centre(self, key: jax.Array, archive: Archive, adapter) -> ESEmitterState:
        key_pick, key_init = jax.random.split(key)
        elite = sample(key_pick, archive, 1)[0]
        strategy = trees.strong_types(adapter.init(key_init, elite.params, elite.masks))
        return ESEmitterState(
            strategy=strategy, masks=elite.masks, rates=elite.rates, age=jnp.zeros((), jnp.int32)
        )

    def init(self, archive: Archive, hyper: Any) -> ESEmitterState:
        """A state due for centring: zeros shaped like a centred one, ``age = restart_every``."""
        shapes = jax.eval_shape(
            lambda k, a: self._centre(k, a, self.adapter), jax.random.key(0), archive
        )
        state = jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
        return state.replace(age=jnp.asarray(self.config.restart_every, jnp.int32))

    def emit(
        self, key: jax.Array, archive: Archive, state: ESEmitterState, hyper: Any
    ) -> tuple[Population, ESEmitterState]:
        """Re-centres if due, then asks the strategy for ``population_size`` samples."""
        adapter = self.strategy(hyper)
        key_centre, key_ask, _ = jax.random.split(key, 3)
        restart = state.age >= self.config.restart_every
        fresh = self._centre(key_centre, archive, adapter)
        state = trees.select(restart, fresh, state)
        samples, strategy = adapter.ask(key_ask, state.strategy, state.masks)
        size = self.batch_size
        offspring = Population(
            params=adapter.unravel_population(samples),
            masks=jax.tree_util.tree_map(
                lambda m: jnp.broadcast_to(m, (size, *m.shape)), state.masks
            ),
            rates=jnp.broadcast_to(state.rates, (size, 2)),
        )
        return offspring, state.replace(strategy=trees.strong_types(strategy))

    def update(
        self,
        key: jax.Array,
        state: ESEmitterState,
        offspring: Population,
        result: EvalResult,
        inserted: jax.Array,
        hyper: Any,
    ) -> tuple[ESEmitterState, dict[str, jax.Array]]:
        """Tells the strategy its samples' fitness; metrics ``es_num_inserted`` and
        ``es_max_fitness`` (best finite fitness of the samples, ``-inf`` if none)."""
        adapter = self.strategy(hyper)
        _, _, key_tell = jax.random.split(key, 3)
        samples = jax.vmap(adapter.ravel)(offspring.params)
        strategy, _ = adapter.tell(key_tell, samples, result.fitness, state.strategy, state.masks)
        state = state.replace(strategy=trees.strong_types(strategy), age=state.age + 1)
        fitness = result.fitness
        return state, {
            "es_num_inserted": jnp.sum(inserted, dtype=jnp.int32),
            "es_max_fitness": jnp.max(jnp.where(jnp.isfinite(fitness), fitness, -jnp.inf)),
        }


# ----- mix of emitters --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class MixEmitter:
    """Several emitters in one generation (QDax's ``MultiEmitter``).

    Emitter ``i`` gets ``split(key, n)[i]`` (in ``emit`` and ``update``), emits its
    ``batch_size`` offspring, which are concatenated in order, and is updated from its own slice
    of the offspring, the evaluation and the insertion flags. Every emitter reads the same
    hyper. The state is the tuple of the emitters' states (``None`` when none has state).
    Metrics are merged; a name reported by several emitters gets the emitter's index appended
    (``es_max_fitness_1``).

    ``emit(key, archive, state, hyper)`` returns ``(offspring, state)``, the offspring a
    :class:`~synprune_jax.types.Population` with leaves ``[batch_size, ...]`` (the sum of the
    emitters' batch sizes); ``update`` returns ``(state, metrics)``.

    Args:
        emitters: a tuple of emitters (at least one).

    Raises:
        TypeError: ``emitters`` is not a non-empty tuple.

    Examples:
        >>> from synprune_jax.archives import GridSpec, init_archive
        >>> from synprune_jax.tasks import KinematicArm
        >>> from synprune_jax.types import Population
        >>> task = KinematicArm(num_joints=3)  # genes {"angles": [3]}, a direct genotype
        >>> one = Population({"angles": jnp.zeros(3)}, {"angles": jnp.ones(3, bool)}, jnp.zeros(2))
        >>> archive = init_archive(GridSpec((0.0, 0.0), (1.0, 1.0), (2, 2)), one)  # 4 cells
        >>> no_forward = MutationConfig(forward_prune=False)
        >>> mutation = MutationEmitter(task, batch_size=4, mutation=no_forward)
        >>> emitter = MixEmitter((mutation, ESEmitter(ESEmitterConfig(population_size=2), task)))
        >>> emitter.batch_size  # 4 mutated, then 2 ES offspring
        6
        >>> hyper = emitter.default_hyper  # the one both can read
        >>> type(hyper).__name__
        'MapElitesESHyper'
        >>> state = emitter.init(archive, hyper)
        >>> state[0], type(state[1]).__name__
        (None, 'ESEmitterState')
        >>> key = jax.random.key(0)
        >>> offspring, state = jax.eval_shape(emitter.emit, key, archive, state, hyper)
        >>> jax.tree.map(jnp.shape, offspring)  # shapes only, nothing runs
        Population(params={'angles': (6, 3)}, masks={'angles': (6, 3)}, rates=(6, 2))
        >>> MixEmitter([mutation])  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        TypeError: emitters must be a non-empty tuple, got [MutationEmitter(...)]
    """

    emitters: tuple

    def __post_init__(self):
        if not isinstance(self.emitters, tuple) or not self.emitters:
            raise TypeError(f"emitters must be a non-empty tuple, got {self.emitters!r}")

    @property
    def batch_size(self) -> int:
        """Total offspring per generation."""
        return sum(emitter.batch_size for emitter in self.emitters)

    @property
    def default_hyper(self) -> Any:
        """The first of the emitters' default hypers that every emitter can read.

        Raises:
            TypeError: none fits all emitters (build the hyper by hand).
        """
        for emitter in self.emitters:
            candidate = emitter.default_hyper
            try:
                self.check_hyper(candidate)
            except TypeError:
                continue
            return candidate
        raise TypeError(
            "no emitter's default hyper fits every emitter of the mix; pass a "
            "hyper that has what each one reads"
        )

    def check_hyper(self, hyper: Any) -> None:
        """Raises ``TypeError`` if any emitter cannot read ``hyper``."""
        for emitter in self.emitters:
            emitter.check_hyper(hyper)

    def init(self, archive: Archive, hyper: Any) -> tuple | None:
        """The tuple of the emitters' ``init`` states, or ``None`` when every one is ``None``."""
        states = tuple(emitter.init(archive, hyper) for emitter in self.emitters)
        return None if all(state is None for state in states) else states

    def _states(self, state):
        return (None,) * len(self.emitters) if state is None else state

    def emit(
        self, key: jax.Array, archive: Archive, state, hyper: Any
    ) -> tuple[Population, tuple | None]:
        """The emitters' offspring, concatenated in order (``[sum of batch sizes, ...]``)."""
        keys = jax.random.split(key, len(self.emitters))
        parts, states = [], []
        for emitter, emitter_key, emitter_state in zip(
            self.emitters, keys, self._states(state), strict=True
        ):
            offspring, emitter_state = emitter.emit(emitter_key, archive, emitter_state, hyper)
            parts.append(offspring)
            states.append(emitter_state)
        offspring = jax.tree_util.tree_map(lambda *leaves: jnp.concatenate(leaves), *parts)
        return offspring, (None if state is None else tuple(states))

    def update(
        self,
        key: jax.Array,
        state,
        offspring: Population,
        result: EvalResult,
        inserted: jax.Array,
        hyper: Any,
    ) -> tuple[tuple | None, dict[str, jax.Array]]:
        """Updates emitter ``i`` from rows ``[start_i, start_i + batch_size_i)``."""
        keys = jax.random.split(key, len(self.emitters))
        states, reported = [], []
        start = 0
        for emitter, emitter_key, emitter_state in zip(
            self.emitters, keys, self._states(state), strict=True
        ):
            rows = slice(start, start + emitter.batch_size)
            start += emitter.batch_size
            part = lambda tree, rows=rows: jax.tree_util.tree_map(lambda leaf: leaf[rows], tree)
            emitter_state, metrics = emitter.update(
                emitter_key, emitter_state, part(offspring), part(result), inserted[rows], hyper
            )
            states.append(emitter_state)
            reported.append(metrics)
        names = [name for metrics in reported for name in metrics]
        merged = {
            f"{name}_{index}" if names.count(name) > 1 else name: value
            for index, metrics in enumerate(reported)
            for name, value in metrics.items()
        }
        return (None if state is None else tuple(states)), merged
