"""NSGA-II over bit-string genomes, and what it shares with the steady-state GA.

:class:`NSGA2` follows the runner protocol (static structure in the object, numeric knobs in
:class:`NSGA2Hyper` passed to every call); objectives are maximised. The memo, the initial
population, the crossover and the ask / evaluate / tell step are shared with
:mod:`synprune_jax.algorithms.steady_state_ga`; ``docs/mo_transfer.md`` describes both.

A *problem* is any hashable object with

* ``genome_length`` (``L``, int) and ``num_objectives`` (``M``, int);
* ``evaluate(key, genomes [B, L] bool) -> objectives [B, M] float32`` (jittable, batched);
* optionally ``default_hyper``, a pytree of the problem's own numeric knobs: then it is evaluated
  as ``evaluate(key, genomes, hyper.problem)`` and those knobs travel in the algorithm's hyper
  (e.g. :class:`~synprune_jax.transfer.problem.ProblemHyper`).

One NSGA-II step: binary tournament on (rank, crowding), uniform crossover, bit flips, objectives
through the :class:`Memo` (which stores *every* objective of each evaluated genome), elitist
survival of the best ``P`` of parents + children.

Example (bi-objective LOTZ: leading ones x trailing zeros):
    >>> import jax, jax.numpy as jnp
    >>> class Lotz:
    ...     genome_length, num_objectives = 8, 2
    ...     def evaluate(self, key, genomes):
    ...         ones = jnp.cumprod(genomes, axis=1).sum(axis=1)
    ...         zeros = jnp.cumprod(~genomes[:, ::-1], axis=1).sum(axis=1)
    ...         return jnp.stack([ones, zeros], axis=1).astype(jnp.float32)
    >>> algorithm = NSGA2(NSGA2Config(population_size=16, memo_capacity=64), Lotz())
    >>> hyper = algorithm.default_hyper.replace(crossover_rate=0.8)
    >>> state = jax.jit(algorithm.init)(jax.random.key(0), hyper)
    >>> state, metrics = jax.jit(algorithm.step)(jax.random.key(1), state, hyper)
    >>> state.genomes.shape, sorted(metrics)[:2]
    ((16, 8), ['front_size', 'max_objective_0'])
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from synprune_jax.archives.pareto import crowding_distance, non_dominated_rank, survival_order

MODES = ("generational", "steady_state")


# ----- memo of evaluated genomes ------------------------------------------------------------------


class Memo(struct.PyTreeNode):
    """Evaluated genomes and *all* their objectives (a ring buffer of capacity ``C``).

    Attributes:
        genomes: ``[C, L]`` bool. objectives: ``[C, M]`` float32. filled: ``[C]`` bool.
        next_slot: int32 scalar, where the next insertion goes (modulo ``C``).
    """

    genomes: jax.Array
    objectives: jax.Array
    filled: jax.Array
    next_slot: jax.Array


def init_memo(capacity: int, genome_length: int, num_objectives: int) -> Memo:
    """An empty memo (``capacity`` may be 0: then nothing is ever stored)."""
    return Memo(
        genomes=jnp.zeros((capacity, genome_length), bool),
        objectives=jnp.zeros((capacity, num_objectives), jnp.float32),
        filled=jnp.zeros((capacity,), bool),
        next_slot=jnp.int32(0),
    )


def memo_lookup(memo: Memo, genomes: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``genomes [B, L]`` -> ``(hit [B] bool, objectives [B, M])`` (zeros where missed)."""
    if memo.genomes.shape[0] == 0:
        return (
            jnp.zeros(genomes.shape[:1], bool),
            jnp.zeros((genomes.shape[0], memo.objectives.shape[1]), jnp.float32),
        )
    match = jnp.all(memo.genomes[None, :, :] == genomes[:, None, :], axis=-1)
    match = match & memo.filled[None, :]
    hit = jnp.any(match, axis=1)
    stored = memo.objectives[jnp.argmax(match, axis=1)]
    return hit, jnp.where(hit[:, None], stored, 0.0)


def first_occurrence(genomes: jax.Array) -> jax.Array:
    """``[B, L] -> [B]`` int32: index of the first row equal to each row."""
    equal = jnp.all(genomes[:, None, :] == genomes[None, :, :], axis=-1)
    return jnp.argmax(equal, axis=1).astype(jnp.int32)


def memo_insert(memo: Memo, genomes: jax.Array, objectives: jax.Array, insert: jax.Array) -> Memo:
    """Stores the rows with ``insert [B]`` True at the next ring slots (one scatter)."""
    capacity = memo.genomes.shape[0]
    if capacity == 0:
        return memo
    offsets = jnp.cumsum(insert.astype(jnp.int32)) - 1
    slots = jnp.where(insert, (memo.next_slot + offsets) % capacity, capacity)  # capacity: drop
    return Memo(
        genomes=memo.genomes.at[slots].set(genomes, mode="drop"),
        objectives=memo.objectives.at[slots].set(objectives.astype(jnp.float32), mode="drop"),
        filled=memo.filled.at[slots].set(True, mode="drop"),
        next_slot=(memo.next_slot + jnp.sum(insert.astype(jnp.int32))) % capacity,
    )


def evaluate_with_memo(
    problem, key: jax.Array, memo: Memo, genomes: jax.Array, problem_hyper=None
) -> tuple[jax.Array, Memo, jax.Array]:
    """Objectives of ``genomes [B, L]`` bool through the memo; ``key`` and ``problem_hyper``
    (None for a problem without hyper-parameters) go to ``problem.evaluate``.

    Returns:
        ``(objectives [B, M], new memo, number of genomes actually evaluated (int32))``; the
        count is the number of distinct genomes of the batch that missed the memo.
    """
    hit, stored = memo_lookup(memo, genomes)
    num_objectives = memo.objectives.shape[1]

    def fresh(_):
        extra = () if problem_hyper is None else (problem_hyper,)
        return problem.evaluate(key, genomes, *extra).astype(jnp.float32)

    def skipped(_):
        return jnp.zeros((genomes.shape[0], num_objectives), jnp.float32)

    evaluated = jax.lax.cond(jnp.all(hit), skipped, fresh, None)
    objectives = jnp.where(hit[:, None], stored, evaluated)
    first = first_occurrence(genomes)
    objectives = objectives[first]
    is_first = first == jnp.arange(genomes.shape[0])
    new = ~hit & is_first
    memo = memo_insert(memo, genomes, objectives, new)
    return objectives, memo, jnp.sum(new.astype(jnp.int32))


# ----- variation operators (per batch; pure) ------------------------------------------------------


def random_density_genomes(key: jax.Array, num: int, length: int) -> jax.Array:
    """``[num, length]`` bool: each row's density ``~ U(0, 1)``, then independent bits."""
    density_key, bit_key = jax.random.split(key)
    density = jax.random.uniform(density_key, (num, 1))
    return jax.random.uniform(bit_key, (num, length)) < density


def binary_tournament(key: jax.Array, ranks: jax.Array, crowding: jax.Array, num: int) -> jax.Array:
    """``num`` winners ``[num]`` int32 of random pairs: lower rank, then larger crowding, wins
    (a full tie goes to the first of the pair)."""
    pairs = jax.random.randint(key, (num, 2), 0, ranks.shape[0])
    first, second = pairs[:, 0], pairs[:, 1]
    second_wins = (ranks[second] < ranks[first]) | (
        (ranks[second] == ranks[first]) & (crowding[second] > crowding[first])
    )
    return jnp.where(second_wins, second, first).astype(jnp.int32)


def uniform_crossover_bits(
    key: jax.Array, first: jax.Array, second: jax.Array, crossover_rate
) -> jax.Array:
    """Children ``[B, L]``: each bit from either parent with probability 1/2 when the pair
    crosses (probability ``crossover_rate``), otherwise a copy of ``first``."""
    cross_key, bit_key = jax.random.split(key)
    crosses = jax.random.uniform(cross_key, (first.shape[0], 1)) < crossover_rate
    take_second = jax.random.bernoulli(bit_key, 0.5, first.shape) & crosses
    return jnp.where(take_second, second, first)


def bit_flip_mutation(key: jax.Array, genomes: jax.Array, rate) -> jax.Array:
    """Flips every bit of ``genomes [B, L]`` independently with probability ``rate``."""
    return genomes ^ (jax.random.uniform(key, genomes.shape) < rate)


# ----- shared by NSGA-II and the steady-state GA --------------------------------------------------


def initial_population(
    key: jax.Array, population_size: int, memo_capacity: int, problem, problem_hyper=None
):
    """Random-density genomes ``[P, L]`` evaluated through a fresh memo.

    Returns:
        ``(genomes [P, L] bool, objectives [P, M], memo, num_evaluations int32)``.
    """
    genome_key, eval_key = jax.random.split(key)
    genomes = random_density_genomes(genome_key, population_size, problem.genome_length)
    memo = init_memo(memo_capacity, problem.genome_length, problem.num_objectives)
    objectives, memo, count = evaluate_with_memo(problem, eval_key, memo, genomes, problem_hyper)
    return genomes, objectives, memo, count


def ask_evaluate_tell(algorithm, key: jax.Array, state, hyper):
    """One step of :class:`NSGA2` or of
    :class:`~synprune_jax.algorithms.steady_state_ga.SteadyStateGA`: ``algorithm.ask``,
    evaluation through the memo (every objective stored; the problem's hyper-parameters
    ``hyper.problem``), ``algorithm.tell``, generation and evaluation counts.

    Returns:
        ``(state, algorithm.metrics(state))``.
    """
    ask_key, eval_key = jax.random.split(key)
    children = algorithm.ask(ask_key, state, hyper)
    objectives, memo, count = evaluate_with_memo(
        algorithm.problem, eval_key, state.memo, children, hyper.problem
    )
    state = algorithm.tell(state.replace(memo=memo), children, objectives)
    state = state.replace(
        generation=state.generation + 1, num_evaluations=state.num_evaluations + count
    )
    return state, algorithm.metrics(state)


def objective_names_of(problem, objective_names) -> tuple[str, ...]:
    """``objective_names`` as a tuple, or ``objective_<i>`` for each of the problem's objectives.

    Raises:
        ValueError: ``objective_names`` does not have one name per objective.
    """
    names = tuple(objective_names or (f"objective_{i}" for i in range(problem.num_objectives)))
    if len(names) != problem.num_objectives:
        raise ValueError(
            f"objective_names must name every objective: {problem.num_objectives} names, "
            f"got {len(names)} ({', '.join(names)})"
        )
    return names


# ----- NSGA-II ------------------------------------------------------------------------------------


class NSGA2Hyper(struct.PyTreeNode):
    """Numeric knobs of :class:`NSGA2` (traced: a sweep stacks them on a run axis).

    A ``flax.struct`` pytree: its fields are leaves (scalars, or ``[R]`` arrays for ``R`` stacked
    runs); a field left at None is an empty subtree. Nothing is checked here:
    :func:`validate_hyper` checks concrete values.

    Attributes:
        crossover_rate: probability that a pair is recombined (uniform crossover), in [0, 1].
        mutation_rate: bit-flip probability per bit, in [0, 1]; None means ``1 / L``
            (:attr:`NSGA2.default_hyper` and :meth:`NSGA2.resolve_hyper` fill it in).
        problem: the problem's own hyper-parameter pytree, or None (passed to
            ``problem.evaluate`` as its third argument when not None).

    Examples:
        >>> hyper = NSGA2Hyper(crossover_rate=0.8)
        >>> hyper
        NSGA2Hyper(crossover_rate=0.8, mutation_rate=None, problem=None)
        >>> jax.tree.leaves(hyper)  # None fields are empty subtrees
        [0.8]
        >>> hyper.replace(mutation_rate=0.25).mutation_rate
        0.25
    """

    crossover_rate: float = 0.9
    mutation_rate: float | None = None
    problem: Any = None


def validate_hyper(hyper: NSGA2Hyper) -> None:
    """Raises ``ValueError`` for rates outside ``[0, 1]`` (concrete values, before compiling)."""
    if not 0 <= hyper.crossover_rate <= 1:
        raise ValueError("nsga2.crossover_rate must be in [0, 1]")
    if hyper.mutation_rate is not None and not 0 <= hyper.mutation_rate <= 1:
        raise ValueError("nsga2.mutation_rate must be in [0, 1] (or null for 1/L)")


@dataclasses.dataclass(frozen=True)
class NSGA2Config:
    """Static settings of NSGA-II (the rates are in :class:`NSGA2Hyper`).

    Attributes:
        population_size: ``P`` (>= 2).
        mode: ``"generational"`` (``P`` children per step) or ``"steady_state"``.
        num_offspring: children per step in steady-state mode (>= 1; ignored when
            generational).
        memo_capacity: genomes remembered with all their objectives (0 disables the memo;
            otherwise at least :attr:`offspring_per_step`).

    Raises:
        ValueError: an unknown ``mode`` or a value out of range (the message names the field).

    Examples:
        >>> NSGA2Config(population_size=10).offspring_per_step  # generational: P children
        10
        >>> NSGA2Config(population_size=10, mode="steady_state", num_offspring=2).offspring_per_step
        2
        >>> NSGA2Config(population_size=10, memo_capacity=4)
        Traceback (most recent call last):
        ...
        ValueError: nsga2.memo_capacity must be 0 or at least the children per step
    """

    population_size: int = 40
    mode: str = "generational"
    num_offspring: int = 1
    memo_capacity: int = 2048

    def __post_init__(self):
        if self.population_size < 2:
            raise ValueError("nsga2.population_size must be >= 2")
        if self.mode not in MODES:
            raise ValueError(f"nsga2.mode must be one of {list(MODES)}, got {self.mode!r}")
        if self.num_offspring < 1:
            raise ValueError("nsga2.num_offspring must be >= 1")
        if self.memo_capacity < 0:
            raise ValueError("nsga2.memo_capacity must be >= 0")
        if 0 < self.memo_capacity < self.offspring_per_step:
            raise ValueError("nsga2.memo_capacity must be 0 or at least the children per step")

    @property
    def offspring_per_step(self) -> int:
        """Children made per step: ``population_size`` (generational) or ``num_offspring``."""
        return self.population_size if self.mode == "generational" else self.num_offspring


class NSGA2State(struct.PyTreeNode):
    """Population and bookkeeping of NSGA-II (a pytree without PRNG keys;
    :meth:`NSGA2.init` makes it, :meth:`NSGA2.step` advances it).

    Attributes:
        genomes: ``[P, L]`` bool.
        objectives: ``[P, M]`` float32 (maximised).
        ranks: ``[P]`` int32 front index (0: non-dominated).
        crowding: ``[P]`` float32 crowding distance (``inf`` at the ends of a front).
        memo: :class:`Memo` of capacity ``C = memo_capacity``.
        generation: int32 scalar.
        num_evaluations: int32 scalar, genomes evaluated by the problem (memo misses, initial
            population included).

    Examples:
        >>> class Lotz:  # leading ones x trailing zeros
        ...     genome_length, num_objectives = 4, 2
        ...     def evaluate(self, key, genomes):
        ...         ones = jnp.cumprod(genomes, axis=1).sum(axis=1)
        ...         zeros = jnp.cumprod(~genomes[:, ::-1], axis=1).sum(axis=1)
        ...         return jnp.stack([ones, zeros], axis=1).astype(jnp.float32)
        >>> algorithm = NSGA2(NSGA2Config(population_size=6, memo_capacity=8), Lotz())
        >>> state = jax.eval_shape(algorithm.init, jax.random.key(0), algorithm.default_hyper)
        >>> jax.tree.map(jnp.shape, state)  # doctest: +NORMALIZE_WHITESPACE
        NSGA2State(genomes=(6, 4), objectives=(6, 2), ranks=(6,), crowding=(6,),
                   memo=Memo(genomes=(8, 4), objectives=(8, 2), filled=(8,), next_slot=()),
                   generation=(), num_evaluations=())
        >>> state.genomes.dtype, state.objectives.dtype, state.ranks.dtype
        (dtype('bool'), dtype('float32'), dtype('int32'))
    """

    genomes: jax.Array
    objectives: jax.Array
    ranks: jax.Array
    crowding: jax.Array
    memo: Memo
    generation: jax.Array
    num_evaluations: jax.Array


@dataclasses.dataclass(frozen=True)
class NSGA2:
    """NSGA-II for a bit-string problem (see module docstring).

    Static structure only (equal config, problem and names compare equal); the rates are the
    :class:`NSGA2Hyper` of each call. ``init(key, hyper)`` returns an :class:`NSGA2State`;
    ``step(key, state, hyper)`` returns ``(state, metrics)``, the metrics being int32 / float32
    scalars ``front_size``, ``max_<name>`` per objective, ``mean_density`` and
    ``num_evaluations``. Both are pure; the caller jits / scans them.

    Args:
        config: :class:`NSGA2Config`.
        problem: ``genome_length`` ``L``, ``num_objectives`` ``M`` (>= 2), ``evaluate(key,
            genomes [B, L] bool) -> [B, M] float32`` (hashable; see module docstring).
        objective_names: ``M`` names for the metrics (``max_<name>``); default
            ``objective_<i>``.

    Raises:
        ValueError: the problem has fewer than two objectives, or ``objective_names`` does not
            name each of them.

    Examples:
        >>> class Lotz:  # leading ones x trailing zeros
        ...     genome_length, num_objectives = 4, 2
        ...     def evaluate(self, key, genomes):
        ...         ones = jnp.cumprod(genomes, axis=1).sum(axis=1)
        ...         zeros = jnp.cumprod(~genomes[:, ::-1], axis=1).sum(axis=1)
        ...         return jnp.stack([ones, zeros], axis=1).astype(jnp.float32)
        >>> algorithm = NSGA2(NSGA2Config(population_size=6), Lotz(), ("ones", "zeros"))
        >>> algorithm.default_hyper  # mutation_rate = 1 / L
        NSGA2Hyper(crossover_rate=0.9, mutation_rate=0.25, problem=None)
        >>> key, hyper = jax.random.key(0), algorithm.default_hyper
        >>> state = jax.eval_shape(algorithm.init, key, hyper)  # shapes only, nothing runs
        >>> _, metrics = jax.eval_shape(algorithm.step, key, state, hyper)
        >>> sorted(metrics)
        ['front_size', 'max_ones', 'max_zeros', 'mean_density', 'num_evaluations']
        >>> NSGA2(NSGA2Config(), Lotz(), ("ones",))
        Traceback (most recent call last):
        ...
        ValueError: objective_names must name every objective: 2 names, got 1 (ones)
    """

    config: NSGA2Config
    problem: Any
    objective_names: tuple[str, ...] | None = None

    def __post_init__(self):
        if self.problem.num_objectives < 2:
            raise ValueError("NSGA-II needs at least two objectives (use SteadyStateGA for one)")
        names = objective_names_of(self.problem, self.objective_names)
        object.__setattr__(self, "objective_names", names)

    @property
    def default_hyper(self) -> NSGA2Hyper:
        """``NSGA2Hyper()`` with ``mutation_rate = 1 / L`` and the problem's ``default_hyper``."""
        return self.resolve_hyper(NSGA2Hyper(problem=getattr(self.problem, "default_hyper", None)))

    def resolve_hyper(self, hyper: NSGA2Hyper) -> NSGA2Hyper:
        """``hyper`` with a ``mutation_rate`` of None replaced by ``1 / L``."""
        if hyper.mutation_rate is not None:
            return hyper
        return hyper.replace(mutation_rate=1.0 / self.problem.genome_length)

    def _sorted(self, objectives):
        ranks = non_dominated_rank(objectives)
        return ranks, crowding_distance(objectives, ranks)

    def init(self, key: jax.Array, hyper: NSGA2Hyper) -> NSGA2State:
        """Random-density population, evaluated and sorted."""
        config = self.config
        genomes, objectives, memo, count = initial_population(
            key, config.population_size, config.memo_capacity, self.problem, hyper.problem
        )
        ranks, crowding = self._sorted(objectives)
        return NSGA2State(
            genomes=genomes,
            objectives=objectives,
            ranks=ranks,
            crowding=crowding,
            memo=memo,
            generation=jnp.int32(0),
            num_evaluations=count,
        )

    def ask(self, key: jax.Array, state: NSGA2State, hyper: NSGA2Hyper) -> jax.Array:
        """Children ``[B, L]`` of one step."""
        hyper = self.resolve_hyper(hyper)
        num = self.config.offspring_per_step
        select_key, cross_key, mutate_key = jax.random.split(key, 3)
        winners = binary_tournament(select_key, state.ranks, state.crowding, 2 * num)
        children = uniform_crossover_bits(
            cross_key,
            state.genomes[winners[:num]],
            state.genomes[winners[num:]],
            hyper.crossover_rate,
        )
        return bit_flip_mutation(mutate_key, children, hyper.mutation_rate)

    def tell(self, state: NSGA2State, children: jax.Array, objectives: jax.Array) -> NSGA2State:
        """Elitist survival of the best ``P`` among population + children."""
        genomes = jnp.concatenate([state.genomes, children])
        pooled = jnp.concatenate([state.objectives, objectives])
        ranks, crowding = self._sorted(pooled)
        keep = survival_order(ranks, crowding)[: self.config.population_size]
        genomes, pooled = genomes[keep], pooled[keep]
        ranks, crowding = self._sorted(pooled)
        return state.replace(genomes=genomes, objectives=pooled, ranks=ranks, crowding=crowding)

    def step(self, key: jax.Array, state: NSGA2State, hyper: NSGA2Hyper) -> tuple[NSGA2State, dict]:
        """One generation (or one steady-state insertion of ``num_offspring`` children)."""
        return ask_evaluate_tell(self, key, state, hyper)

    def metrics(self, state: NSGA2State) -> dict:
        """Scalar metrics: front size, best value of each objective, evaluations, density."""
        valid = jnp.all(jnp.isfinite(state.objectives), axis=1)
        metrics = {
            "front_size": jnp.sum((state.ranks == 0).astype(jnp.int32)),
            "num_evaluations": state.num_evaluations,
            "mean_density": jnp.mean(state.genomes.astype(jnp.float32)),
        }
        for index, name in enumerate(self.objective_names or ()):  # set in __post_init__
            values = jnp.where(valid, state.objectives[:, index], -jnp.inf)
            metrics[f"max_{name}"] = jnp.max(values)
        return metrics
