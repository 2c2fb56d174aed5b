"""NSGA-II over bit-string genomes, and the single-objective steady-state GA it generalises.

Both follow the runner protocol (``init(key) -> state``, ``step(key, state) -> (state, metrics)``,
states are ``flax.struct`` dataclasses with an int32 ``generation`` and numeric / bool leaves), so
checkpoints and exact resume come from :func:`synprune_jax.runner.run`. Objectives are maximised.

A *problem* is any object with

* ``genome_length`` (``L``, int) and ``num_objectives`` (``M``, int);
* ``evaluate(key, genomes [B, L] bool) -> objectives [B, M] float32`` (jittable, batched).

**NSGA-II** (:class:`NSGA2`), one step::

    parents   = binary tournament on (rank ascending, crowding descending)      [2 * B]
    children  = uniform crossover (probability crossover_rate, else a copy of parent 1)
                + independent bit flips (probability mutation_rate, 1 / L by default)   [B, L]
    objectives = memo lookup, else problem.evaluate                             [B, M]
    survivors = best P of parents + children by (rank, -crowding)               (elitist)

Generational mode makes ``B = P`` children per step; steady-state mode makes ``B =
num_offspring`` (1 by default), i.e. ``(P + B)`` survival after every few children. The initial
individuals have a density drawn uniformly in ``(0, 1)`` each, then independent bits.

**Single-objective GA** (:class:`SteadyStateGA`, the original EvoPruneDeepTL-style GA): for each
of ``num_offspring`` children, parent 1 is uniform at random and parent 2 is the most distant (in
Hamming distance) of ``num_candidates`` (3) random individuals; uniform crossover; with
probability ``mutation_probability`` (0.07) one random bit flips. Children are evaluated together,
then inserted one after another: a child replaces the current worst individual if its fitness is
higher, or equal with fewer active bits (ties go to the sparser model).

**Memo** (:class:`Memo`): a fixed-capacity ring table of evaluated genomes that stores *every*
objective of each. A genome already in the table gets its stored objective vector, all of it (the
original code's cache returned a stale single value for a genome seen before); duplicates inside
one batch share the objectives of their first occurrence. When every child of a step hits the
memo, the evaluation is skipped (``lax.cond``).

**Sweeps.** ``init(key)`` / ``step(key, state)`` are ``init_with`` / ``step_with`` called with the
algorithm's own ``sweep_hyper`` (:class:`NSGA2Hyper`: crossover and mutation rates;
:class:`SteadyStateGAHyper`: mutation probability; each also carries the problem's own traced
hyper-parameters when the problem has ``sweep_hyper`` and ``bind(hyper)``, e.g. the transfer
problem's learning rate, momentum, OOD temperature and training seed). :mod:`synprune_jax.sweeps`
stacks these on a run axis and groups runs by ``sweep_static()``.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import struct

from synprune_jax.archives.pareto import crowding_distance, non_dominated_rank, survival_order
from synprune_jax.config import ConfigError

MODES = ("generational", "steady_state")


# --------------------------------------------------------------------------------------------
# Memo of evaluated genomes.


@struct.dataclass
class Memo:
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
    return Memo(genomes=jnp.zeros((capacity, genome_length), bool),
                objectives=jnp.zeros((capacity, num_objectives), jnp.float32),
                filled=jnp.zeros((capacity,), bool), next_slot=jnp.int32(0))


def memo_lookup(memo: Memo, genomes: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``genomes [B, L]`` -> ``(hit [B] bool, objectives [B, M])`` (zeros where missed)."""
    if memo.genomes.shape[0] == 0:
        return (jnp.zeros(genomes.shape[:1], bool),
                jnp.zeros((genomes.shape[0], memo.objectives.shape[1]), jnp.float32))
    match = jnp.all(memo.genomes[None, :, :] == genomes[:, None, :], axis=-1)
    match = match & memo.filled[None, :]
    hit = jnp.any(match, axis=1)
    stored = memo.objectives[jnp.argmax(match, axis=1)]
    return hit, jnp.where(hit[:, None], stored, 0.0)


def first_occurrence(genomes: jax.Array) -> jax.Array:
    """``[B, L] -> [B]`` int32: index of the first row equal to each row."""
    equal = jnp.all(genomes[:, None, :] == genomes[None, :, :], axis=-1)
    return jnp.argmax(equal, axis=1).astype(jnp.int32)


def memo_insert(memo: Memo, genomes: jax.Array, objectives: jax.Array,
                insert: jax.Array) -> Memo:
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


def evaluate_with_memo(problem, key: jax.Array, memo: Memo,
                       genomes: jax.Array) -> tuple[jax.Array, Memo, jax.Array]:
    """Objectives of ``genomes [B, L]`` through the memo.

    Returns:
        ``(objectives [B, M], new memo, number of genomes actually evaluated (int32))``; the
        count is the number of distinct genomes of the batch that missed the memo.
    """
    hit, stored = memo_lookup(memo, genomes)
    num_objectives = memo.objectives.shape[1]

    def fresh(_):
        return problem.evaluate(key, genomes).astype(jnp.float32)

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


# --------------------------------------------------------------------------------------------
# Variation operators (per batch; pure).


def random_density_genomes(key: jax.Array, num: int, length: int) -> jax.Array:
    """``[num, length]`` bool: each row's density ``~ U(0, 1)``, then independent bits."""
    density_key, bit_key = jax.random.split(key)
    density = jax.random.uniform(density_key, (num, 1))
    return jax.random.uniform(bit_key, (num, length)) < density


def binary_tournament(key: jax.Array, ranks: jax.Array, crowding: jax.Array,
                      num: int) -> jax.Array:
    """``num`` winners ``[num]`` int32 of random pairs: lower rank, then larger crowding, wins
    (a full tie goes to the first of the pair)."""
    pairs = jax.random.randint(key, (num, 2), 0, ranks.shape[0])
    first, second = pairs[:, 0], pairs[:, 1]
    second_wins = (ranks[second] < ranks[first]) | (
        (ranks[second] == ranks[first]) & (crowding[second] > crowding[first]))
    return jnp.where(second_wins, second, first).astype(jnp.int32)


def uniform_crossover_bits(key: jax.Array, first: jax.Array, second: jax.Array,
                      crossover_rate) -> jax.Array:
    """Children ``[B, L]``: each bit from either parent with probability 1/2 when the pair
    crosses (probability ``crossover_rate``), otherwise a copy of ``first``."""
    cross_key, bit_key = jax.random.split(key)
    crosses = jax.random.uniform(cross_key, (first.shape[0], 1)) < crossover_rate
    take_second = jax.random.bernoulli(bit_key, 0.5, first.shape) & crosses
    return jnp.where(take_second, second, first)


def bit_flip_mutation(key: jax.Array, genomes: jax.Array, rate) -> jax.Array:
    """Flips every bit of ``genomes [B, L]`` independently with probability ``rate``."""
    return genomes ^ (jax.random.uniform(key, genomes.shape) < rate)


def one_bit_mutation(key: jax.Array, genomes: jax.Array, probability) -> jax.Array:
    """With probability ``probability`` per row, flips exactly one uniformly chosen bit."""
    apply_key, bit_key = jax.random.split(key)
    apply = jax.random.uniform(apply_key, (genomes.shape[0],)) < probability
    position = jax.random.randint(bit_key, (genomes.shape[0],), 0, genomes.shape[1])
    flip = (jnp.arange(genomes.shape[1])[None, :] == position[:, None]) & apply[:, None]
    return genomes ^ flip


def most_distant_candidate(key: jax.Array, genomes: jax.Array, anchors: jax.Array,
                           num_candidates: int) -> jax.Array:
    """For each anchor index ``[B]``, the most Hamming-distant of ``num_candidates`` random
    individuals (ties: the first drawn). Returns ``[B]`` int32 indices."""
    candidates = jax.random.randint(key, (anchors.shape[0], num_candidates), 0, genomes.shape[0])
    distance = jnp.sum(genomes[candidates] != genomes[anchors][:, None, :], axis=-1)
    best = jnp.argmax(distance, axis=1)
    return jnp.take_along_axis(candidates, best[:, None], axis=1)[:, 0].astype(jnp.int32)


# --------------------------------------------------------------------------------------------
# NSGA-II.


def _initial_population(key: jax.Array, config, problem):
    """Random-density genomes ``[P, L]`` evaluated through a fresh memo (NSGA-II and the GA):
    returns ``(genomes, objectives [P, M], memo, num_evaluations)``."""
    genome_key, eval_key = jax.random.split(key)
    genomes = random_density_genomes(genome_key, config.population_size, problem.genome_length)
    memo = init_memo(config.memo_capacity, problem.genome_length, problem.num_objectives)
    objectives, memo, count = evaluate_with_memo(problem, eval_key, memo, genomes)
    return genomes, objectives, memo, count


def _ask_evaluate_tell(algorithm, key: jax.Array, state, hyper):
    """One step shared by :class:`NSGA2` and :class:`SteadyStateGA`: ask, evaluate through the
    memo (every objective stored), tell, count generation and evaluations."""
    ask_key, eval_key = jax.random.split(key)
    children = algorithm.ask(ask_key, state, hyper)
    objectives, memo, count = evaluate_with_memo(_bound_problem(algorithm.problem, hyper),
                                                 eval_key, state.memo, children)
    state = algorithm.tell(state.replace(memo=memo), children, objectives)
    state = state.replace(generation=state.generation + 1,
                          num_evaluations=state.num_evaluations + count)
    return state, algorithm.metrics(state)


def _problem_hyper(problem):
    """The problem's own traced hyper-parameters, or None (a problem joins sweeps with traced
    knobs by having ``sweep_hyper`` and ``bind(hyper) -> problem``)."""
    if hasattr(problem, "bind") and hasattr(problem, "sweep_hyper"):
        return problem.sweep_hyper
    return None


def _bound_problem(problem, hyper):
    """``problem`` evaluating with ``hyper.problem`` (itself when that is None)."""
    return problem if hyper.problem is None else problem.bind(hyper.problem)


def _problem_static(problem):
    """Hashable identity of a problem's static part: ``problem.sweep_static()``, else the problem
    itself when hashable, else its ``id`` (then every run compiles alone)."""
    if hasattr(problem, "sweep_static"):
        return problem.sweep_static()
    try:
        hash(problem)
    except TypeError:
        return ("unhashable", id(problem))
    return problem


def _static_fields(config, traced: tuple[str, ...]) -> tuple:
    return tuple((f.name, getattr(config, f.name)) for f in dataclasses.fields(config)
                 if f.name not in traced)


@struct.dataclass
class NSGA2Hyper:
    """Traced knobs of :class:`NSGA2`.

    Attributes:
        crossover_rate: probability that a pair is recombined.
        mutation_rate: bit-flip probability per bit (resolved: ``1 / L`` when the config says
            None).
        problem: the problem's own hyper-parameter pytree, or None.
    """

    crossover_rate: float
    mutation_rate: float
    problem: object = None


@struct.dataclass
class SteadyStateGAHyper:
    """Traced knobs of :class:`SteadyStateGA`: ``mutation_probability`` and the problem's own
    hyper-parameter pytree (or None)."""

    mutation_probability: float
    problem: object = None


@dataclasses.dataclass(frozen=True)
class NSGA2Config:
    """Static settings of NSGA-II.

    Attributes:
        population_size: ``P`` (>= 2).
        mode: ``"generational"`` (``P`` children per step) or ``"steady_state"``.
        num_offspring: children per step in steady-state mode (ignored when generational).
        crossover_rate: probability that a pair is recombined (uniform crossover).
        mutation_rate: bit-flip probability per bit; None means ``1 / L``.
        memo_capacity: genomes remembered with all their objectives (0 disables the memo).
    """

    population_size: int = 40
    mode: str = "generational"
    num_offspring: int = 1
    crossover_rate: float = 0.9
    mutation_rate: float | None = None
    memo_capacity: int = 2048

    def __post_init__(self):
        if self.population_size < 2:
            raise ConfigError("nsga2.population_size must be >= 2")
        if self.mode not in MODES:
            raise ConfigError(f"nsga2.mode must be one of {list(MODES)}, got {self.mode!r}")
        if self.num_offspring < 1:
            raise ConfigError("nsga2.num_offspring must be >= 1")
        if not 0 <= self.crossover_rate <= 1:
            raise ConfigError("nsga2.crossover_rate must be in [0, 1]")
        if self.mutation_rate is not None and not 0 <= self.mutation_rate <= 1:
            raise ConfigError("nsga2.mutation_rate must be in [0, 1] (or null for 1/L)")
        if self.memo_capacity < 0:
            raise ConfigError("nsga2.memo_capacity must be >= 0")
        if 0 < self.memo_capacity < self.offspring_per_step:
            raise ConfigError("nsga2.memo_capacity must be 0 or at least the children per step")

    @property
    def offspring_per_step(self) -> int:
        return self.population_size if self.mode == "generational" else self.num_offspring


@struct.dataclass
class NSGA2State:
    """Population and bookkeeping of NSGA-II.

    Attributes:
        genomes: ``[P, L]`` bool. objectives: ``[P, M]`` float32 (maximised).
        ranks: ``[P]`` int32 front index. crowding: ``[P]`` float32 crowding distance.
        memo: :class:`Memo`. generation: int32. num_evaluations: int32, genomes evaluated by
        the problem (memo misses, initial population included).
    """

    genomes: jax.Array
    objectives: jax.Array
    ranks: jax.Array
    crowding: jax.Array
    memo: Memo
    generation: jax.Array
    num_evaluations: jax.Array


class NSGA2:
    """NSGA-II for a bit-string problem (see module docstring).

    Args:
        config: :class:`NSGA2Config`.
        problem: ``genome_length``, ``num_objectives``, ``evaluate(key, genomes)``.
        objective_names: names for the metrics (``max_<name>``); default ``objective_<i>``.
    """

    def __init__(self, config: NSGA2Config, problem, objective_names=None):
        if problem.num_objectives < 2:
            raise ConfigError("NSGA-II needs at least two objectives "
                              "(use SteadyStateGA for one)")
        self.config = config
        self.problem = problem
        length = problem.genome_length
        self.mutation_rate = (1.0 / length if config.mutation_rate is None
                              else config.mutation_rate)
        self.objective_names = tuple(objective_names or
                                     (f"objective_{i}" for i in range(problem.num_objectives)))
        if len(self.objective_names) != problem.num_objectives:
            raise ConfigError("objective_names must name every objective")

    def _sorted(self, objectives):
        ranks = non_dominated_rank(objectives)
        return ranks, crowding_distance(objectives, ranks)

    @property
    def sweep_hyper(self) -> NSGA2Hyper:
        """The algorithm's own traced hyper-parameters."""
        return NSGA2Hyper(crossover_rate=self.config.crossover_rate,
                          mutation_rate=self.mutation_rate,
                          problem=_problem_hyper(self.problem))

    def sweep_static(self):
        """Hashable key of what fixes the compiled program (everything but :attr:`sweep_hyper`)."""
        return ("nsga2", _static_fields(self.config, ("crossover_rate", "mutation_rate")),
                _problem_static(self.problem), self.objective_names)

    def init(self, key: jax.Array) -> NSGA2State:
        """Random-density population, evaluated and sorted."""
        return self.init_with(key, self.sweep_hyper)

    def init_with(self, key: jax.Array, hyper: NSGA2Hyper) -> NSGA2State:
        """:meth:`init` with the given (possibly traced) hyper-parameters."""
        config, problem = self.config, _bound_problem(self.problem, hyper)
        genomes, objectives, memo, count = _initial_population(key, config, problem)
        ranks, crowding = self._sorted(objectives)
        return NSGA2State(genomes=genomes, objectives=objectives, ranks=ranks, crowding=crowding,
                          memo=memo, generation=jnp.int32(0), num_evaluations=count)

    def ask(self, key: jax.Array, state: NSGA2State,
            hyper: NSGA2Hyper | None = None) -> jax.Array:
        """Children ``[B, L]`` of one step."""
        hyper = self.sweep_hyper if hyper is None else hyper
        num = self.config.offspring_per_step
        select_key, cross_key, mutate_key = jax.random.split(key, 3)
        winners = binary_tournament(select_key, state.ranks, state.crowding, 2 * num)
        children = uniform_crossover_bits(cross_key, state.genomes[winners[:num]],
                                          state.genomes[winners[num:]],
                                          hyper.crossover_rate)
        return bit_flip_mutation(mutate_key, children, hyper.mutation_rate)

    def tell(self, state: NSGA2State, children: jax.Array,
             objectives: jax.Array) -> NSGA2State:
        """Elitist survival of the best ``P`` among population + children."""
        genomes = jnp.concatenate([state.genomes, children])
        pooled = jnp.concatenate([state.objectives, objectives])
        ranks, crowding = self._sorted(pooled)
        keep = survival_order(ranks, crowding)[: self.config.population_size]
        genomes, pooled = genomes[keep], pooled[keep]
        ranks, crowding = self._sorted(pooled)
        return state.replace(genomes=genomes, objectives=pooled, ranks=ranks, crowding=crowding)

    def step(self, key: jax.Array, state: NSGA2State) -> tuple[NSGA2State, dict]:
        """One generation (or one steady-state insertion of ``num_offspring`` children)."""
        return self.step_with(key, state, self.sweep_hyper)

    def step_with(self, key: jax.Array, state: NSGA2State,
                  hyper: NSGA2Hyper) -> tuple[NSGA2State, dict]:
        """:meth:`step` with the given (possibly traced) hyper-parameters."""
        return _ask_evaluate_tell(self, key, state, hyper)

    def metrics(self, state: NSGA2State) -> dict:
        """Scalar metrics: front size, best value of each objective, evaluations, density."""
        valid = jnp.all(jnp.isfinite(state.objectives), axis=1)
        metrics = {"front_size": jnp.sum((state.ranks == 0).astype(jnp.int32)),
                   "num_evaluations": state.num_evaluations,
                   "mean_density": jnp.mean(state.genomes.astype(jnp.float32))}
        for index, name in enumerate(self.objective_names):
            values = jnp.where(valid, state.objectives[:, index], -jnp.inf)
            metrics[f"max_{name}"] = jnp.max(values)
        return metrics


# --------------------------------------------------------------------------------------------
# Single-objective steady-state GA.


@dataclasses.dataclass(frozen=True)
class SteadyStateGAConfig:
    """Static settings of the single-objective steady-state GA.

    Attributes:
        population_size: ``P`` (>= 2).
        num_offspring: children per step (evaluated together, inserted one after another).
        num_candidates: random candidates for parent 2 (the most Hamming-distant one is chosen).
        mutation_probability: probability that a child gets one bit flipped.
        memo_capacity: as in :class:`NSGA2Config`.
        objective_index: which objective of the problem is the fitness.
    """

    population_size: int = 40
    num_offspring: int = 4
    num_candidates: int = 3
    mutation_probability: float = 0.07
    memo_capacity: int = 2048
    objective_index: int = 0

    def __post_init__(self):
        if self.population_size < 2:
            raise ConfigError("ga.population_size must be >= 2")
        if self.num_offspring < 1 or self.num_candidates < 1:
            raise ConfigError("ga.num_offspring and ga.num_candidates must be >= 1")
        if not 0 <= self.mutation_probability <= 1:
            raise ConfigError("ga.mutation_probability must be in [0, 1]")
        if self.memo_capacity < 0 or 0 < self.memo_capacity < self.num_offspring:
            raise ConfigError("ga.memo_capacity must be 0 or at least num_offspring")


@struct.dataclass
class SteadyStateGAState:
    """Population of the steady-state GA.

    Attributes:
        genomes: ``[P, L]`` bool. objectives: ``[P, M]`` float32 (every objective is kept).
        fitness: ``[P]`` float32, the chosen objective. memo: :class:`Memo`.
        generation: int32. num_evaluations: int32.
    """

    genomes: jax.Array
    objectives: jax.Array
    fitness: jax.Array
    memo: Memo
    generation: jax.Array
    num_evaluations: jax.Array


def replace_worst(genomes: jax.Array, fitness: jax.Array, child: jax.Array,
                  child_fitness: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Index of the worst individual and whether ``child`` replaces it.

    The worst has the lowest fitness (NaN counts as lowest), among equals the most active bits,
    then the lowest index. The child replaces it when its fitness is higher, or equal with
    fewer active bits.

    Returns:
        ``(worst index int32, replace bool)``.
    """
    clean = jnp.where(jnp.isnan(fitness), -jnp.inf, fitness)
    active = jnp.sum(genomes.astype(jnp.int32), axis=1)
    worst = jnp.lexsort((-active, clean))[0].astype(jnp.int32)
    child_active = jnp.sum(child.astype(jnp.int32))
    child_fitness = jnp.where(jnp.isnan(child_fitness), -jnp.inf, child_fitness)
    better = (child_fitness > clean[worst]) | (
        (child_fitness == clean[worst]) & (child_active < active[worst]))
    return worst, better


class SteadyStateGA:
    """The single-objective GA of the original method (see module docstring)."""

    def __init__(self, config: SteadyStateGAConfig, problem, objective_names=None):
        if not 0 <= config.objective_index < problem.num_objectives:
            raise ConfigError(f"ga.objective_index {config.objective_index} is not an "
                              f"objective index of the problem (M = {problem.num_objectives})")
        self.config = config
        self.problem = problem
        self.objective_names = tuple(objective_names or
                                     (f"objective_{i}" for i in range(problem.num_objectives)))

    @property
    def sweep_hyper(self) -> SteadyStateGAHyper:
        """The algorithm's own traced hyper-parameters."""
        return SteadyStateGAHyper(mutation_probability=self.config.mutation_probability,
                                  problem=_problem_hyper(self.problem))

    def sweep_static(self):
        """Hashable key of what fixes the compiled program (everything but :attr:`sweep_hyper`)."""
        return ("steady_state_ga", _static_fields(self.config, ("mutation_probability",)),
                _problem_static(self.problem), self.objective_names)

    def init(self, key: jax.Array) -> SteadyStateGAState:
        return self.init_with(key, self.sweep_hyper)

    def init_with(self, key: jax.Array, hyper: SteadyStateGAHyper) -> SteadyStateGAState:
        """:meth:`init` with the given (possibly traced) hyper-parameters."""
        config, problem = self.config, _bound_problem(self.problem, hyper)
        genomes, objectives, memo, count = _initial_population(key, config, problem)
        return SteadyStateGAState(genomes=genomes, objectives=objectives,
                                  fitness=objectives[:, config.objective_index], memo=memo,
                                  generation=jnp.int32(0), num_evaluations=count)

    def ask(self, key: jax.Array, state: SteadyStateGAState,
            hyper: SteadyStateGAHyper | None = None) -> jax.Array:
        hyper = self.sweep_hyper if hyper is None else hyper
        config = self.config
        first_key, second_key, cross_key, mutate_key = jax.random.split(key, 4)
        num = config.num_offspring
        first = jax.random.randint(first_key, (num,), 0, config.population_size)
        second = most_distant_candidate(second_key, state.genomes, first, config.num_candidates)
        children = uniform_crossover_bits(cross_key, state.genomes[first],
                                          state.genomes[second], 1.0)
        return one_bit_mutation(mutate_key, children, hyper.mutation_probability)

    def tell(self, state: SteadyStateGAState, children: jax.Array,
             objectives: jax.Array) -> SteadyStateGAState:
        index = self.config.objective_index

        def insert(carry, child_and_objectives):
            genomes, all_objectives, fitness = carry
            child, child_objectives = child_and_objectives
            worst, better = replace_worst(genomes, fitness, child, child_objectives[index])
            genomes = genomes.at[worst].set(jnp.where(better, child, genomes[worst]))
            all_objectives = all_objectives.at[worst].set(
                jnp.where(better, child_objectives, all_objectives[worst]))
            fitness = all_objectives[:, index]
            return (genomes, all_objectives, fitness), better

        (genomes, all_objectives, fitness), _ = jax.lax.scan(
            insert, (state.genomes, state.objectives, state.fitness), (children, objectives))
        return state.replace(genomes=genomes, objectives=all_objectives, fitness=fitness)

    def step(self, key: jax.Array, state: SteadyStateGAState) -> tuple[SteadyStateGAState, dict]:
        return self.step_with(key, state, self.sweep_hyper)

    def step_with(self, key: jax.Array, state: SteadyStateGAState,
                  hyper: SteadyStateGAHyper) -> tuple[SteadyStateGAState, dict]:
        """:meth:`step` with the given (possibly traced) hyper-parameters."""
        return _ask_evaluate_tell(self, key, state, hyper)

    def metrics(self, state: SteadyStateGAState) -> dict:
        fitness = jnp.where(jnp.isnan(state.fitness), -jnp.inf, state.fitness)
        best = jnp.argmax(fitness)
        metrics = {"max_fitness": fitness[best], "mean_fitness": jnp.mean(state.fitness),
                   "best_density": jnp.mean(state.genomes[best].astype(jnp.float32)),
                   "mean_density": jnp.mean(state.genomes.astype(jnp.float32)),
                   "num_evaluations": state.num_evaluations}
        for i, name in enumerate(self.objective_names):
            metrics[f"max_{name}"] = jnp.max(jnp.where(jnp.isfinite(state.objectives[:, i]),
                                                       state.objectives[:, i], -jnp.inf))
        return metrics


__all__ = [
    "Memo", "NSGA2", "NSGA2Config", "NSGA2Hyper", "NSGA2State", "SteadyStateGA",
    "SteadyStateGAConfig", "SteadyStateGAHyper", "SteadyStateGAState",
    "binary_tournament", "bit_flip_mutation", "evaluate_with_memo", "first_occurrence",
    "init_memo", "memo_insert", "memo_lookup", "most_distant_candidate", "one_bit_mutation",
    "random_density_genomes", "replace_worst", "uniform_crossover_bits",
]
