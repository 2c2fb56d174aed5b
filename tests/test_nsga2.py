"""NSGA-II, the single-objective steady-state GA, their operators and the memo."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from synprune_jax.algorithms.nsga2 import (
    NSGA2,
    NSGA2Config,
    NSGA2Hyper,
    binary_tournament,
    bit_flip_mutation,
    evaluate_with_memo,
    init_memo,
    memo_insert,
    memo_lookup,
    random_density_genomes,
    uniform_crossover_bits,
    validate_hyper,
)
from synprune_jax.algorithms.steady_state_ga import (
    SteadyStateGA,
    SteadyStateGAConfig,
    SteadyStateGAHyper,
    most_distant_candidate,
    one_bit_mutation,
    replace_worst,
)
from synprune_jax.algorithms.steady_state_ga import validate_hyper as validate_ga_hyper
from synprune_jax.archives.pareto import hypervolume
from synprune_jax.runner import stack


class LeadingOnesTrailingZeros:
    """Bi-objective LOTZ: the Pareto front is ``1^i 0^(L-i)``, objectives ``(i, L - i)``."""

    num_objectives = 2

    def __init__(self, genome_length):
        self.genome_length = genome_length

    def evaluate(self, key, genomes):
        leading = jnp.sum(jnp.cumprod(genomes.astype(jnp.int32), axis=1), axis=1)
        trailing = jnp.sum(jnp.cumprod((~genomes[:, ::-1]).astype(jnp.int32), axis=1), axis=1)
        return jnp.stack([leading, trailing], axis=1).astype(jnp.float32)


class NoisyThreeObjectives:
    """Random objectives per call: a memo must make repeated genomes consistent."""

    num_objectives = 3
    genome_length = 6

    def evaluate(self, key, genomes):
        return jax.random.uniform(key, (genomes.shape[0], 3))


class OneMax:
    num_objectives = 2
    genome_length = 12

    def evaluate(self, key, genomes):
        ones = jnp.sum(genomes.astype(jnp.float32), axis=1)
        return jnp.stack([jnp.minimum(ones, 8.0), -ones], axis=1)


def test_memo_stores_and_returns_every_objective():
    memo = init_memo(4, 3, 3)
    genomes = jnp.array([[True, False, True], [False, False, True]])
    objectives = jnp.array([[0.9, 0.2, 0.7], [0.5, 0.6, 0.1]])
    memo = memo_insert(memo, genomes, objectives, jnp.array([True, True]))
    hit, stored = memo_lookup(
        memo, jnp.array([[False, False, True], [True, True, True], [True, False, True]])
    )
    np.testing.assert_array_equal(np.asarray(hit), [True, False, True])
    np.testing.assert_allclose(np.asarray(stored), [[0.5, 0.6, 0.1], [0, 0, 0], [0.9, 0.2, 0.7]])
    assert int(memo.next_slot) == 2
    # ring buffer: three more insertions wrap around and overwrite slot 0
    more = jnp.array([[True, True, True], [False, True, False], [True, True, False]])
    memo = memo_insert(memo, more, jnp.ones((3, 3)), jnp.array([True, True, True]))
    hit, _ = memo_lookup(memo, genomes)
    np.testing.assert_array_equal(np.asarray(hit), [False, True])


def test_evaluate_with_memo_is_consistent_for_repeated_genomes():
    problem = NoisyThreeObjectives()
    memo = init_memo(16, 6, 3)
    genomes = jnp.array([[1, 0, 1, 0, 1, 0], [1, 0, 1, 0, 1, 0], [0, 0, 0, 0, 0, 1]], bool)
    first, memo, count = evaluate_with_memo(problem, jax.random.key(0), memo, genomes)
    assert int(count) == 2
    np.testing.assert_array_equal(np.asarray(first[0]), np.asarray(first[1]))  # in-batch dup
    # later evaluation with another key: the memo returns the stored vectors, all 3 objectives
    again, memo, count = evaluate_with_memo(problem, jax.random.key(1), memo, genomes[::-1])
    assert int(count) == 0
    np.testing.assert_array_equal(np.asarray(again), np.asarray(first[::-1]))
    fresh = problem.evaluate(jax.random.key(1), genomes[::-1])
    assert not np.allclose(np.asarray(fresh), np.asarray(again))  # would have been stale


def test_operators_exact():
    assert np.asarray(random_density_genomes(jax.random.key(0), 50, 40)).mean(axis=1).std() > 0.2
    ranks = jnp.array([0, 1, 0, 2])
    crowding = jnp.array([1.0, jnp.inf, 3.0, jnp.inf])
    winners = np.asarray(binary_tournament(jax.random.key(1), ranks, crowding, 500))
    assert 3 in winners  # the worst can win only against itself
    assert np.mean(winners == 2) > np.mean(winners == 0)  # same rank, larger crowding
    a, b = jnp.zeros((4, 50), bool), jnp.ones((4, 50), bool)
    copied = uniform_crossover_bits(jax.random.key(2), a, b, 0.0)
    np.testing.assert_array_equal(np.asarray(copied), np.asarray(a))
    mixed = np.asarray(uniform_crossover_bits(jax.random.key(2), a, b, 1.0))
    assert 0.3 < mixed.mean() < 0.7
    flipped = np.asarray(one_bit_mutation(jax.random.key(3), a, 1.0))
    np.testing.assert_array_equal(flipped.sum(axis=1), [1, 1, 1, 1])
    assert not np.asarray(one_bit_mutation(jax.random.key(3), a, 0.0)).any()
    assert np.asarray(bit_flip_mutation(jax.random.key(4), a, 1.0)).all()
    genomes = jnp.array([[0, 0, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]], bool)
    chosen = np.asarray(most_distant_candidate(jax.random.key(5), genomes, jnp.zeros(200, int), 3))
    # from anchor 0 (all zeros) individual 1 is farthest; it is picked whenever drawn
    drawn = np.asarray(jax.random.randint(jax.random.key(5), (200, 3), 0, 3))
    np.testing.assert_array_equal(chosen == 1, (drawn == 1).any(axis=1))


def test_replace_worst_ties_go_to_the_sparser_model():
    genomes = jnp.array([[1, 1, 0], [1, 1, 1], [1, 0, 0]], bool)
    fitness = jnp.array([0.5, 0.5, 0.9])
    sparse, dense = jnp.array([1, 0, 0], bool), jnp.array([1, 1, 1], bool)
    worst, replace = replace_worst(genomes, fitness, sparse, jnp.float32(0.5))
    assert int(worst) == 1 and bool(replace)  # worst = the denser of the two 0.5s
    assert not bool(replace_worst(genomes, fitness, dense, jnp.float32(0.5))[1])
    assert bool(replace_worst(genomes, fitness, dense, jnp.float32(0.6))[1])
    assert not bool(replace_worst(genomes, fitness, sparse, jnp.float32(0.4))[1])


@pytest.fixture(scope="module")
def lotz_run():
    problem = LeadingOnesTrailingZeros(8)
    algorithm = NSGA2(NSGA2Config(population_size=24, memo_capacity=256), problem)
    hyper = algorithm.default_hyper
    assert hyper == NSGA2Hyper(crossover_rate=0.9, mutation_rate=1 / 8)  # P = 1 / L
    step = jax.jit(chex.assert_max_traces(algorithm.step, n=1))
    state = jax.jit(algorithm.init)(jax.random.key(0), hyper)
    initial = state
    for generation in range(60):
        state, metrics = step(jax.random.fold_in(jax.random.key(1), generation), state, hyper)
    return problem, initial, state, metrics


def test_nsga2_finds_the_whole_lotz_front(lotz_run):
    problem, initial, state, metrics = lotz_run
    assert int(state.generation) == 60
    front = {tuple(row) for row in np.asarray(state.objectives[state.ranks == 0]).tolist()}
    assert front == {(float(i), float(8 - i)) for i in range(9)}
    assert int(metrics["front_size"]) >= 9
    reference = np.array([-1.0, -1.0])
    assert hypervolume(np.asarray(state.objectives), reference) > hypervolume(
        np.asarray(initial.objectives), reference
    )
    # the memo held every evaluation: counts agree with the distinct genomes seen
    assert int(state.num_evaluations) == int(state.memo.filled.sum())
    assert int(state.num_evaluations) < 24 * 61


def test_nsga2_population_objectives_belong_to_their_genomes(lotz_run):
    problem, _, state, _ = lotz_run
    np.testing.assert_array_equal(
        np.asarray(problem.evaluate(None, state.genomes)), np.asarray(state.objectives)
    )


def test_nsga2_elitist_survival_exact():
    problem = LeadingOnesTrailingZeros(4)
    algorithm = NSGA2(NSGA2Config(population_size=2, memo_capacity=0), problem)
    state = jax.jit(algorithm.init)(jax.random.key(0), algorithm.default_hyper)
    parents = jnp.array([[0, 0, 0, 0], [1, 0, 0, 0]], bool)  # (0, 4), (1, 3)
    state = state.replace(genomes=parents, objectives=problem.evaluate(None, parents))
    children = jnp.array([[1, 1, 0, 0], [0, 1, 0, 0]], bool)  # (2, 2), dominated (0, 2)
    state = jax.jit(algorithm.tell)(state, children, problem.evaluate(None, children))
    # front {(0,4), (1,3), (2,2)} is cut to 2 by crowding: the two boundary points survive
    np.testing.assert_array_equal(np.asarray(state.genomes), [[0, 0, 0, 0], [1, 1, 0, 0]])
    np.testing.assert_array_equal(np.asarray(state.ranks), [0, 0])
    assert np.isinf(np.asarray(state.crowding)).all()


def test_steady_state_nsga2_and_config_errors():
    problem = OneMax()
    algorithm = NSGA2(
        NSGA2Config(population_size=10, mode="steady_state", num_offspring=2, memo_capacity=64),
        problem,
    )
    hyper = algorithm.default_hyper
    state = jax.jit(algorithm.init)(jax.random.key(0), hyper)
    step = jax.jit(algorithm.step)
    for generation in range(40):
        state, metrics = step(jax.random.key(generation), state, hyper)
    assert float(metrics["max_objective_0"]) == 8.0
    with pytest.raises(ValueError, match="mode"):
        NSGA2Config(mode="sideways")
    with pytest.raises(ValueError, match="memo_capacity"):
        NSGA2Config(population_size=10, memo_capacity=5)  # below the 10 children per step
    with pytest.raises(ValueError, match="two objectives"):
        NSGA2(NSGA2Config(), type("One", (), {"num_objectives": 1, "genome_length": 3})())
    with pytest.raises(ValueError, match="crossover_rate"):
        validate_hyper(NSGA2Hyper(crossover_rate=1.5))
    with pytest.raises(ValueError, match="mutation_rate"):
        validate_hyper(NSGA2Hyper(mutation_rate=-0.1))
    validate_hyper(NSGA2Hyper())  # None: 1 / L


def test_steady_state_ga_improves_and_prefers_sparse_ties():
    problem = OneMax()  # fitness min(ones, 8): ties above 8 ones go to sparser genomes
    config = SteadyStateGAConfig(population_size=12, num_offspring=3, memo_capacity=64)
    algorithm = SteadyStateGA(config, problem)
    hyper = algorithm.default_hyper
    assert hyper == SteadyStateGAHyper(mutation_probability=0.07)
    state = jax.jit(algorithm.init)(jax.random.key(0), hyper)
    step = jax.jit(algorithm.step)
    initial_best = float(state.fitness.max())
    worst, best = [float(state.fitness.min())], [initial_best]
    for generation in range(150):
        state, metrics = step(jax.random.key(generation), state, hyper)
        worst.append(float(state.fitness.min()))
        best.append(float(metrics["max_fitness"]))
    assert best[-1] == 8.0 >= initial_best
    # only a better (or equally fit and sparser) child replaces the worst: no fitness drops
    assert np.all(np.diff(worst) >= 0) and np.all(np.diff(best) >= 0)
    assert worst[-1] > worst[0]
    ones = np.asarray(state.genomes).sum(axis=1)
    assert ones[np.asarray(state.fitness) == 8.0].min() == 8
    np.testing.assert_array_equal(np.asarray(state.fitness), np.asarray(state.objectives[:, 0]))


def test_algorithms_compare_by_static_structure():
    # what a sweep groups on: equal configs and the same problem -> equal, hashable algorithms
    problem = LeadingOnesTrailingZeros(10)
    config = NSGA2Config(population_size=8, memo_capacity=16)
    assert NSGA2(config, problem) == NSGA2(
        NSGA2Config(population_size=8, memo_capacity=16), problem
    )
    assert hash(NSGA2(config, problem)) == hash(NSGA2(config, problem))
    assert NSGA2(config, problem) != NSGA2(config, LeadingOnesTrailingZeros(10))  # by identity
    assert NSGA2(config, problem) != NSGA2(
        NSGA2Config(population_size=10, memo_capacity=16), problem
    )
    assert NSGA2(config, problem, ["a", "b"]).objective_names == ("a", "b")
    one_max = OneMax()
    ga_config = SteadyStateGAConfig(population_size=8, memo_capacity=16)
    assert SteadyStateGA(ga_config, one_max) == SteadyStateGA(ga_config, one_max)
    assert hash(SteadyStateGA(ga_config, one_max)) == hash(SteadyStateGA(ga_config, one_max))
    with pytest.raises(ValueError, match="mutation_probability"):
        validate_ga_hyper(SteadyStateGAHyper(mutation_probability=2.0))
    with pytest.raises(ValueError, match="objective_index"):
        SteadyStateGA(SteadyStateGAConfig(objective_index=2), OneMax())
    # one metric name per objective, for the single-objective GA too (extra names used to read
    # a clamped column: max_<extra> repeated the last objective)
    for names in (("a",), ("a", "b", "c")):
        with pytest.raises(ValueError, match=f"2 names, got {len(names)}"):
            SteadyStateGA(ga_config, one_max, names)
    # mean_fitness leaves out invalid (non-finite) individuals, as the other algorithms do
    state = SteadyStateGA(ga_config, one_max).init(jax.random.key(0), SteadyStateGAHyper())
    state = state.replace(fitness=state.fitness.at[0].set(jnp.nan).at[1].set(-jnp.inf))
    metrics = SteadyStateGA(ga_config, one_max).metrics(state)
    assert float(metrics["mean_fitness"]) == pytest.approx(float(jnp.mean(state.fitness[2:])))


@pytest.mark.parametrize("kind", ["nsga2", pytest.param("steady_state_ga", marks=pytest.mark.slow)])
def test_hyper_parameters_vmap_like_separate_runs(kind):
    # hyper-parameters stacked on a run axis: one vmapped program gives each run's numbers (a
    # problem without default_hyper contributes no traced knobs)
    if kind == "nsga2":
        algorithm = NSGA2(
            NSGA2Config(population_size=8, memo_capacity=16), LeadingOnesTrailingZeros(10)
        )
        hypers = [
            algorithm.default_hyper,
            algorithm.resolve_hyper(NSGA2Hyper(crossover_rate=0.5, mutation_rate=0.3)),
        ]
        assert hypers[0] == NSGA2Hyper(crossover_rate=0.9, mutation_rate=0.1)
    else:
        algorithm = SteadyStateGA(
            SteadyStateGAConfig(population_size=8, num_offspring=2, memo_capacity=16), OneMax()
        )
        hypers = [algorithm.default_hyper, SteadyStateGAHyper(mutation_probability=1.0)]
    assert hypers[0].problem is None

    def run(hyper):
        state = algorithm.init(jax.random.key(0), hyper)
        for g in range(3):
            state, metrics = algorithm.step(jax.random.key(g + 1), state, hyper)
        return state, metrics

    batched_state, batched_metrics = jax.jit(jax.vmap(run))(stack(hypers))
    single = jax.jit(run)  # one program for both (hyper traced), not op-by-op
    for index, hyper in enumerate(hypers):
        state, metrics = single(hyper)
        np.testing.assert_array_equal(
            np.asarray(batched_state.genomes[index]), np.asarray(state.genomes)
        )
        for name, value in metrics.items():
            np.testing.assert_allclose(
                np.asarray(batched_metrics[name][index]), np.asarray(value), err_msg=name
            )
    assert not np.array_equal(
        np.asarray(batched_state.genomes[0]), np.asarray(batched_state.genomes[1])
    )


class ScaledOneMax:
    """Two objectives whose scale is a hyper-parameter of the problem."""

    num_objectives = 2
    genome_length = 6

    @property
    def default_hyper(self):
        return jnp.float32(1.0)

    def evaluate(self, key, genomes, scale):
        ones = jnp.sum(genomes.astype(jnp.float32), axis=1)
        return jnp.stack([ones * scale, -ones], axis=1)


@pytest.mark.parametrize("kind", ["nsga2", pytest.param("steady_state_ga", marks=pytest.mark.slow)])
def test_problem_hyper_parameters_reach_the_evaluation(kind):
    # objective 0 scaled by 3 (exact in float32) changes no rank, crowding ratio or comparison,
    # so the run is the same with every objective-0 value three times as large: the problem's
    # hyper-parameter reached the initial and every later evaluation
    problem = ScaledOneMax()
    if kind == "nsga2":
        algorithm = NSGA2(NSGA2Config(population_size=6, memo_capacity=8), problem)
        assert algorithm.default_hyper.mutation_rate == pytest.approx(1 / 6)
    else:
        algorithm = SteadyStateGA(
            SteadyStateGAConfig(population_size=6, num_offspring=2, memo_capacity=8), problem
        )
    hyper = algorithm.default_hyper
    assert float(hyper.problem) == 1.0

    @jax.jit
    def run(hyper):
        state = algorithm.init(jax.random.key(0), hyper)
        for g in range(4):
            state, metrics = algorithm.step(jax.random.key(g + 1), state, hyper)
        return state

    plain, scaled = run(hyper), run(hyper.replace(problem=jnp.float32(3.0)))
    np.testing.assert_array_equal(np.asarray(plain.genomes), np.asarray(scaled.genomes))
    np.testing.assert_array_equal(
        np.asarray(scaled.objectives[:, 0]), 3.0 * np.asarray(plain.objectives[:, 0])
    )
    np.testing.assert_array_equal(
        np.asarray(scaled.objectives[:, 1]), np.asarray(plain.objectives[:, 1])
    )
    assert int(plain.num_evaluations) > 6  # children were evaluated, not only the initial ones
