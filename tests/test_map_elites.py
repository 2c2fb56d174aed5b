import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from synprune_jax import masks as M
from synprune_jax.algorithms import map_elites as me
from synprune_jax.archives import GridSpec
from synprune_jax.tasks import KinematicArm
from synprune_jax.types import EvalResult
from synprune_jax.variation import MutationConfig, MutationHyper

TASK = KinematicArm(num_joints=4, genotype="mlp", descriptors=("sparsity", "disconnected_fraction"))
GRID = GridSpec((0.0, 0.0), (1.0, 1.0), (10, 10))


def _algorithm(**kwargs):
    kwargs = {"batch_size": 32, "initial_batch_size": 64, **kwargs}
    config = me.MapElitesConfig(archive=GRID, **kwargs)
    return me.MapElites(config, TASK, MutationHyper(p_disconnect=0.05, p_connect=0.02))


def test_initial_population_spreads_over_sparsity():
    algorithm = _algorithm()
    population = me.random_population(jax.random.key(0), TASK, algorithm.config,
                                      algorithm.hyper, 256)
    layer = np.asarray(jax.vmap(lambda m: M.mask_statistics(TASK.spec, m).layer_density)(
        population.masks))
    # Beta(1, 1) per layer before forward pruning: the first layer (never forward-pruned)
    # is uniform: both tails populated.
    assert (layer[:, 0] < 0.2).mean() > 0.1 and (layer[:, 0] > 0.8).mean() > 0.1
    np.testing.assert_allclose(population.rates, np.tile([[0.05, 0.02]], (256, 1)))


def test_runs_and_archive_never_loses_a_better_elite():
    algorithm = _algorithm()
    state = jax.jit(algorithm.init)(jax.random.key(0))
    step = jax.jit(algorithm.step)
    previous = np.asarray(state.archive.fitness)
    scores = []
    for generation in range(8):
        state, metrics = step(jax.random.key(generation + 1), state)
        fitness = np.asarray(state.archive.fitness)
        assert (fitness >= previous).all()  # per cell, elites only improve
        previous = fitness
        scores.append(float(metrics["qd_score"]))
    assert int(state.generation) == 8
    assert int(state.num_evaluations) == 64 + 8 * 32
    assert scores == sorted(scores)
    assert float(metrics["coverage"]) > 0.1
    # the stored descriptors match the stored masks (sparsity = 1 - density)
    filled = np.isfinite(np.asarray(state.archive.fitness))
    np.testing.assert_allclose(np.asarray(state.archive.descriptors)[filled, 0],
                               1.0 - np.asarray(state.archive.density)[filled], atol=1e-6)


def test_step_compiles_once():
    algorithm = _algorithm()
    state = jax.jit(algorithm.init)(jax.random.key(0))

    @jax.jit
    @chex.assert_max_traces(n=1)
    def step(key, state):
        return algorithm.step(key, state)

    for index in range(3):
        state, _ = step(jax.random.key(index), state)


def test_nan_fitness_never_enters_the_archive():
    class NaNTask:
        """The arm, but every other individual's fitness is NaN and one descriptor inf."""

        def __getattr__(self, name):
            return getattr(TASK, name)

        def evaluate(self, key, population):
            result = TASK.evaluate(key, population)
            index = jnp.arange(result.fitness.shape[0])
            fitness = jnp.where(index % 2 == 0, jnp.nan, result.fitness)
            descriptors = result.descriptors.at[1].set(jnp.inf)
            return EvalResult(fitness, descriptors, result.extras)

    config = me.MapElitesConfig(archive=GRID, batch_size=16, initial_batch_size=16)
    algorithm = me.MapElites(config, NaNTask())
    state = algorithm.init(jax.random.key(0))
    state, metrics = algorithm.step(jax.random.key(1), state)
    fitness = np.asarray(state.archive.fitness)
    assert not np.isnan(fitness).any() and not np.isposinf(fitness).any()
    assert int(metrics["num_invalid"]) == 8
    assert np.isfinite(float(metrics["qd_score"]))


def test_self_adaptive_rates_are_carried_and_redrawn():
    algorithm = me.MapElites(
        me.MapElitesConfig(archive=GRID, batch_size=64, initial_batch_size=64,
                           mutation=MutationConfig(self_adaptive=True)),
        TASK, MutationHyper(rate_min=1e-3, rate_max=1e-1, rate_redraw_probability=0.5))
    state = algorithm.init(jax.random.key(0))
    rates = np.asarray(state.archive.genomes.rates)[np.isfinite(np.asarray(state.archive.fitness))]
    assert rates.min() >= 1e-3 and rates.max() <= 1e-1 and rates.std() > 0  # spread at init
    state, metrics = algorithm.step(jax.random.key(1), state)
    assert 1e-3 <= float(metrics["mean_p_disconnect"]) <= 1e-1


def test_config_and_task_mismatch_fail_before_compiling():
    with pytest.raises(ValueError, match="descriptor dimensions"):
        me.MapElites(me.MapElitesConfig(archive=GridSpec((0.0,), (1.0,), (5,))), TASK)
    with pytest.raises(ValueError, match="forward_prune"):
        me.MapElites(me.MapElitesConfig(archive=GRID), KinematicArm(num_joints=3))
    with pytest.raises(ValueError, match="batch_size"):
        me.MapElitesConfig(archive=GRID, batch_size=0)


def test_mutation_blocks_give_the_vmapped_offspring():
    # lax.map in blocks (with a remainder block: 10 = 4 + 4 + 2) mutates every child from its
    # own key, exactly as one vmap over the batch.
    whole = _algorithm(batch_size=10)
    blocked = _algorithm(batch_size=10, mutation_block=4)
    state = whole.init(jax.random.key(0))
    emitted = [jax.jit(lambda k, a, alg=alg: me.emit(k, a, TASK, alg.config, alg.hyper))(
        jax.random.key(1), state.archive) for alg in (whole, blocked)]
    chex.assert_trees_all_equal(*emitted)
    assert float(jnp.max(jnp.abs(emitted[0].params["params"]["Dense_0"]["kernel"]))) > 0
    with pytest.raises(ValueError, match="mutation_block"):
        me.MapElitesConfig(archive=GRID, mutation_block=0)
