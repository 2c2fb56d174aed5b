"""The single-objective steady-state GA over bit-string genomes (``docs/mo_transfer.md``).

:class:`SteadyStateGA` follows the runner protocol like
:class:`~synprune_jax.algorithms.nsga2.NSGA2` and shares its problem protocol, memo and initial
population. The fitness is one objective of the problem (``objective_index``); every objective
is kept in the state. One step makes ``B = num_offspring`` children (parent 2: the most
Hamming-distant of ``num_candidates`` random individuals; uniform crossover; one bit flipped with
probability ``mutation_probability``), evaluates them together and inserts them one after
another (:func:`replace_worst`: ties go to the sparser model).

Example (OneMax, capped at 6 ones):
    >>> import jax, jax.numpy as jnp
    >>> class CappedOneMax:
    ...     genome_length, num_objectives = 10, 1
    ...     def evaluate(self, key, genomes):
    ...         return jnp.minimum(genomes.sum(axis=1), 6)[:, None].astype(jnp.float32)
    >>> algorithm = SteadyStateGA(SteadyStateGAConfig(population_size=8, memo_capacity=32),
    ...                           CappedOneMax())
    >>> hyper = algorithm.default_hyper.replace(mutation_probability=0.2)
    >>> state = jax.jit(algorithm.init)(jax.random.key(0), hyper)
    >>> state, metrics = jax.jit(algorithm.step)(jax.random.key(1), state, hyper)
    >>> state.fitness.shape
    (8,)
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from synprune_jax.algorithms.nsga2 import (
    Memo,
    ask_evaluate_tell,
    initial_population,
    objective_names_of,
    uniform_crossover_bits,
)


class SteadyStateGAHyper(struct.PyTreeNode):
    """Numeric knobs of :class:`SteadyStateGA` (traced: a sweep stacks them on a run axis).

    A ``flax.struct`` pytree: its fields are leaves (scalars, or ``[R]`` arrays for ``R`` stacked
    runs); a ``problem`` of None is an empty subtree. Nothing is checked here:
    :func:`validate_hyper` checks concrete values.

    Attributes:
        mutation_probability: probability that a child gets one bit flipped, in [0, 1].
        problem: the problem's own hyper-parameter pytree, or None (passed to
            ``problem.evaluate`` as its third argument when not None).

    Examples:
        >>> hyper = SteadyStateGAHyper(mutation_probability=0.1)
        >>> hyper
        SteadyStateGAHyper(mutation_probability=0.1, problem=None)
        >>> jax.tree.leaves(hyper)
        [0.1]
        >>> validate_hyper(hyper.replace(mutation_probability=1.5))
        Traceback (most recent call last):
        ...
        ValueError: ga.mutation_probability must be in [0, 1]
    """

    mutation_probability: float = 0.07
    problem: Any = None


def validate_hyper(hyper: SteadyStateGAHyper) -> None:
    """Raises ``ValueError`` for a probability outside ``[0, 1]`` (concrete values)."""
    if not 0 <= hyper.mutation_probability <= 1:
        raise ValueError("ga.mutation_probability must be in [0, 1]")


@dataclasses.dataclass(frozen=True)
class SteadyStateGAConfig:
    """Static settings of the single-objective steady-state GA (the mutation probability is in
    :class:`SteadyStateGAHyper`).

    Attributes:
        population_size: ``P`` (>= 2).
        num_offspring: children per step ``B`` (>= 1; evaluated together, inserted one after
            another).
        num_candidates: random candidates for parent 2 (>= 1; the most Hamming-distant one is
            chosen).
        memo_capacity: genomes remembered with all their objectives (0 disables the memo; else
            at least ``num_offspring``).
        objective_index: which objective of the problem is the fitness (checked against the
            problem by :class:`SteadyStateGA`).

    Raises:
        ValueError: a value out of range (the message names the field).

    Examples:
        >>> config = SteadyStateGAConfig(population_size=8, num_offspring=2, memo_capacity=16)
        >>> config.num_candidates, config.objective_index
        (3, 0)
        >>> SteadyStateGAConfig(num_offspring=4, memo_capacity=2)
        Traceback (most recent call last):
        ...
        ValueError: ga.memo_capacity must be 0 or at least num_offspring
    """

    population_size: int = 40
    num_offspring: int = 4
    num_candidates: int = 3
    memo_capacity: int = 2048
    objective_index: int = 0

    def __post_init__(self):
        if self.population_size < 2:
            raise ValueError("ga.population_size must be >= 2")
        if self.num_offspring < 1 or self.num_candidates < 1:
            raise ValueError("ga.num_offspring and ga.num_candidates must be >= 1")
        if self.memo_capacity < 0 or 0 < self.memo_capacity < self.num_offspring:
            raise ValueError("ga.memo_capacity must be 0 or at least num_offspring")


class SteadyStateGAState(struct.PyTreeNode):
    """Population of the steady-state GA.

    Attributes:
        genomes: ``[P, L]`` bool. objectives: ``[P, M]`` float32 (every objective is kept).
        fitness: ``[P]`` float32, the chosen objective.
        memo: :class:`~synprune_jax.algorithms.nsga2.Memo`. generation: int32.
        num_evaluations: int32.
    """

    genomes: jax.Array
    objectives: jax.Array
    fitness: jax.Array
    memo: Memo
    generation: jax.Array
    num_evaluations: jax.Array


def one_bit_mutation(key: jax.Array, genomes: jax.Array, probability) -> jax.Array:
    """With probability ``probability`` per row of ``genomes [B, L]``, flips exactly one
    uniformly chosen bit."""
    apply_key, bit_key = jax.random.split(key)
    apply = jax.random.uniform(apply_key, (genomes.shape[0],)) < probability
    position = jax.random.randint(bit_key, (genomes.shape[0],), 0, genomes.shape[1])
    flip = (jnp.arange(genomes.shape[1])[None, :] == position[:, None]) & apply[:, None]
    return genomes ^ flip


def most_distant_candidate(
    key: jax.Array, genomes: jax.Array, anchors: jax.Array, num_candidates: int
) -> jax.Array:
    """For each anchor index ``[B]``, the most Hamming-distant of ``num_candidates`` random
    individuals of ``genomes [P, L]`` (ties: the first drawn). Returns ``[B]`` int32 indices."""
    candidates = jax.random.randint(key, (anchors.shape[0], num_candidates), 0, genomes.shape[0])
    distance = jnp.sum(genomes[candidates] != genomes[anchors][:, None, :], axis=-1)
    best = jnp.argmax(distance, axis=1)
    return jnp.take_along_axis(candidates, best[:, None], axis=1)[:, 0].astype(jnp.int32)


def replace_worst(
    genomes: jax.Array, fitness: jax.Array, child: jax.Array, child_fitness: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """Index of the worst individual and whether ``child`` replaces it.

    The worst has the lowest fitness (NaN counts as lowest), among equals the most active bits,
    then the lowest index. The child replaces it when its fitness is higher, or equal with
    fewer active bits.

    Args:
        genomes: ``[P, L]`` bool. fitness: ``[P]``. child: ``[L]`` bool. child_fitness: scalar.

    Returns:
        ``(worst index int32, replace bool)``.
    """
    clean = jnp.where(jnp.isnan(fitness), -jnp.inf, fitness)
    active = jnp.sum(genomes.astype(jnp.int32), axis=1)
    worst = jnp.lexsort((-active, clean))[0].astype(jnp.int32)
    child_active = jnp.sum(child.astype(jnp.int32))
    child_fitness = jnp.where(jnp.isnan(child_fitness), -jnp.inf, child_fitness)
    better = (child_fitness > clean[worst]) | (
        (child_fitness == clean[worst]) & (child_active < active[worst])
    )
    return worst, better


@dataclasses.dataclass(frozen=True)
class SteadyStateGA:
    """The single-objective GA of the original method (see module docstring).

    Static structure only (equal config, problem and names compare equal); the mutation
    probability is the :class:`SteadyStateGAHyper` of each call. ``init(key, hyper)`` returns a
    :class:`SteadyStateGAState` (``genomes [P, L]`` bool, ``objectives [P, M]`` and
    ``fitness [P]`` float32, the memo, int32 counters); ``step(key, state, hyper)`` returns
    ``(state, metrics)``, the metrics being scalars ``max_fitness``, ``mean_fitness``,
    ``best_density``, ``mean_density``, ``num_evaluations`` and ``max_<name>`` per objective.
    Both are pure; the caller jits / scans them.

    Args:
        config: :class:`SteadyStateGAConfig`.
        problem: ``genome_length`` ``L``, ``num_objectives`` ``M``, ``evaluate(key,
            genomes [B, L] bool) -> [B, M] float32`` (hashable; see
            :mod:`synprune_jax.algorithms.nsga2`).
        objective_names: names for the metrics (``max_<name>``); default ``objective_<i>``.

    Raises:
        ValueError: ``config.objective_index`` is not in ``[0, M)``.

    Examples:
        >>> class OneMax:  # objectives: ones, zeros
        ...     genome_length, num_objectives = 4, 2
        ...     def evaluate(self, key, genomes):
        ...         ones = genomes.sum(axis=1).astype(jnp.float32)
        ...         return jnp.stack([ones, 4 - ones], axis=1)
        >>> config = SteadyStateGAConfig(population_size=6, num_offspring=2, memo_capacity=8)
        >>> algorithm = SteadyStateGA(config, OneMax())
        >>> algorithm.objective_names
        ('objective_0', 'objective_1')
        >>> key, hyper = jax.random.key(0), algorithm.default_hyper
        >>> state = jax.eval_shape(algorithm.init, key, hyper)  # shapes only, nothing runs
        >>> state.genomes.shape, state.fitness.shape, state.objectives.shape
        ((6, 4), (6,), (6, 2))
        >>> jax.eval_shape(algorithm.ask, key, state, hyper).shape  # B children
        (2, 4)
        >>> _, metrics = jax.eval_shape(algorithm.step, key, state, hyper)
        >>> sorted(metrics)  # doctest: +NORMALIZE_WHITESPACE
        ['best_density', 'max_fitness', 'max_objective_0', 'max_objective_1', 'mean_density',
         'mean_fitness', 'num_evaluations']
        >>> SteadyStateGA(SteadyStateGAConfig(objective_index=2), OneMax())
        Traceback (most recent call last):
        ...
        ValueError: ga.objective_index 2 is not an objective index of the problem (M = 2)
    """

    config: SteadyStateGAConfig
    problem: Any
    objective_names: tuple[str, ...] | None = None

    def __post_init__(self):
        config = self.config
        if not 0 <= config.objective_index < self.problem.num_objectives:
            raise ValueError(
                f"ga.objective_index {config.objective_index} is not an "
                f"objective index of the problem (M = "
                f"{self.problem.num_objectives})"
            )
        object.__setattr__(
            self, "objective_names", objective_names_of(self.problem, self.objective_names)
        )

    @property
    def default_hyper(self) -> SteadyStateGAHyper:
        """``SteadyStateGAHyper()`` with the problem's ``default_hyper``."""
        return SteadyStateGAHyper(problem=getattr(self.problem, "default_hyper", None))

    def init(self, key: jax.Array, hyper: SteadyStateGAHyper) -> SteadyStateGAState:
        """Random-density population, evaluated."""
        config = self.config
        genomes, objectives, memo, count = initial_population(
            key, config.population_size, config.memo_capacity, self.problem, hyper.problem
        )
        return SteadyStateGAState(
            genomes=genomes,
            objectives=objectives,
            fitness=objectives[:, config.objective_index],
            memo=memo,
            generation=jnp.int32(0),
            num_evaluations=count,
        )

    def ask(
        self, key: jax.Array, state: SteadyStateGAState, hyper: SteadyStateGAHyper
    ) -> jax.Array:
        """Children ``[num_offspring, L]`` of one step."""
        config = self.config
        first_key, second_key, cross_key, mutate_key = jax.random.split(key, 4)
        num = config.num_offspring
        first = jax.random.randint(first_key, (num,), 0, config.population_size)
        second = most_distant_candidate(second_key, state.genomes, first, config.num_candidates)
        children = uniform_crossover_bits(
            cross_key, state.genomes[first], state.genomes[second], 1.0
        )
        return one_bit_mutation(mutate_key, children, hyper.mutation_probability)

    def tell(
        self, state: SteadyStateGAState, children: jax.Array, objectives: jax.Array
    ) -> SteadyStateGAState:
        """Inserts ``children [B, L]`` with ``objectives [B, M]`` one after another
        (:func:`replace_worst`)."""
        index = self.config.objective_index

        def insert(carry, child_and_objectives):
            genomes, all_objectives, fitness = carry
            child, child_objectives = child_and_objectives
            worst, better = replace_worst(genomes, fitness, child, child_objectives[index])
            genomes = genomes.at[worst].set(jnp.where(better, child, genomes[worst]))
            all_objectives = all_objectives.at[worst].set(
                jnp.where(better, child_objectives, all_objectives[worst])
            )
            fitness = all_objectives[:, index]
            return (genomes, all_objectives, fitness), better

        (genomes, all_objectives, fitness), _ = jax.lax.scan(
            insert, (state.genomes, state.objectives, state.fitness), (children, objectives)
        )
        return state.replace(genomes=genomes, objectives=all_objectives, fitness=fitness)

    def step(
        self, key: jax.Array, state: SteadyStateGAState, hyper: SteadyStateGAHyper
    ) -> tuple[SteadyStateGAState, dict]:
        """One step: ``num_offspring`` children made, evaluated and inserted."""
        return ask_evaluate_tell(self, key, state, hyper)

    def metrics(self, state: SteadyStateGAState) -> dict:
        """Scalar metrics: best and mean fitness, densities, evaluations, best of each
        objective."""
        fitness = jnp.where(jnp.isnan(state.fitness), -jnp.inf, state.fitness)
        best = jnp.argmax(fitness)
        metrics = {
            "max_fitness": fitness[best],
            "mean_fitness": jnp.nanmean(
                jnp.where(jnp.isfinite(state.fitness), state.fitness, jnp.nan)
            ),
            "best_density": jnp.mean(state.genomes[best].astype(jnp.float32)),
            "mean_density": jnp.mean(state.genomes.astype(jnp.float32)),
            "num_evaluations": state.num_evaluations,
        }
        for i, name in enumerate(self.objective_names or ()):
            metrics[f"max_{name}"] = jnp.max(
                jnp.where(jnp.isfinite(state.objectives[:, i]), state.objectives[:, i], -jnp.inf)
            )
        return metrics
