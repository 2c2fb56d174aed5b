import dataclasses
import tempfile

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import exact_jit, optimized_compilation
from jax import flatten_util

from synprune_jax import checkpoint
from synprune_jax import masks as M
from synprune_jax.algorithms import emitters as em
from synprune_jax.algorithms import map_elites as me
from synprune_jax.archives import GridSpec, add, init_archive, sample
from synprune_jax.tasks import KinematicArm
from synprune_jax.types import EvalResult, Population
from synprune_jax.variation import MutationConfig, MutationHyper, mutate

TASK = KinematicArm(num_joints=4, genotype="mlp", descriptors=("sparsity", "disconnected_fraction"))
GRID = GridSpec((0.0, 0.0), (1.0, 1.0), (10, 10))
HYPER = MutationHyper(p_disconnect=0.05, p_connect=0.02)
SMALL_TASK = KinematicArm(
    num_joints=4,
    genotype="mlp",
    hidden_sizes=(8,),
    descriptors=("sparsity", "disconnected_fraction"),
)
SMALL_CONFIG = me.MapElitesConfig(
    archive=GridSpec((0.0, 0.0), (1.0, 1.0), (6, 6)), batch_size=8, initial_batch_size=16
)


def _algorithm(**kwargs):
    kwargs = {"batch_size": 32, "initial_batch_size": 64, **kwargs}
    config = me.MapElitesConfig(archive=GRID, **kwargs)
    return me.MapElites(config, TASK)


def test_initial_population_spreads_over_sparsity():
    algorithm = _algorithm()
    draw = jax.jit(me.random_population, static_argnums=(1, 2, 4))  # one program, not op by op
    population = draw(jax.random.key(0), TASK, algorithm.config, HYPER, 256)
    layer = np.asarray(
        jax.jit(jax.vmap(lambda m: M.mask_statistics(TASK.spec, m).layer_density))(population.masks)
    )
    # Beta(1, 1) per layer before forward pruning: the first layer (never forward-pruned)
    # is uniform: both tails populated.
    assert (layer[:, 0] < 0.2).mean() > 0.1 and (layer[:, 0] > 0.8).mean() > 0.1
    np.testing.assert_allclose(population.rates, np.tile([[0.05, 0.02]], (256, 1)))


def test_runs_and_archive_never_loses_a_better_elite():
    algorithm = _algorithm()
    state = jax.jit(algorithm.init)(jax.random.key(0), HYPER)
    step = jax.jit(algorithm.step)
    previous = np.asarray(state.archive.fitness)
    scores = []
    for generation in range(8):
        state, metrics = step(jax.random.key(generation + 1), state, HYPER)
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
    np.testing.assert_allclose(
        np.asarray(state.archive.descriptors)[filled, 0],
        1.0 - np.asarray(state.archive.density)[filled],
        atol=1e-6,
    )


def test_step_compiles_once():
    algorithm = _algorithm()
    state = jax.jit(algorithm.init)(jax.random.key(0), HYPER)

    @jax.jit
    @chex.assert_max_traces(n=1)
    def step(key, state, hyper):
        return algorithm.step(key, state, hyper)

    for index in range(3):  # another hyper value is another traced argument, not a recompile
        state, _ = step(jax.random.key(index), state, HYPER.replace(sigma=0.01 * (index + 1)))


def _old_init(key, task, config, hyper):
    """The pre-emitter ``init``, restated: its draws define the README's numbers."""
    key_population, key_eval = jax.random.split(key)
    size = config.initial_batch_size or config.batch_size
    population = me.random_population(key_population, task, config, hyper, size)
    archive = init_archive(config.archive, jax.tree_util.tree_map(lambda x: x[0], population))
    archive, _ = add(config.archive, archive, population, task.evaluate(key_eval, population))
    return archive


def _old_step(key, archive, task, config, hyper):
    """The pre-emitter ``step``, restated (mutation in one vmap; blocks give the same children)."""
    key_emit, key_eval = jax.random.split(key)
    key_parents, key_mutate = jax.random.split(key_emit)
    parents = sample(key_parents, archive, config.batch_size)
    keys = jax.random.split(key_mutate, config.batch_size)
    children = jax.vmap(
        lambda k, parent: mutate(k, parent, task.maskable(), config.mutation, hyper, task.spec)
    )(keys, parents)
    archive, _ = add(config.archive, archive, children, task.evaluate(key_eval, children))
    return archive


@pytest.mark.parametrize(
    "settings",
    [
        {},  # the README's default run: fixed rates, forward pruning
        pytest.param(  # blocks: test_mutation_blocks_give_...; 6.5 s cold
            {"mutation": MutationConfig(self_adaptive=True)}, marks=pytest.mark.slow
        ),
    ],
    ids=["default", "self-adaptive"],
)
def test_mutation_emitter_draws_the_old_random_numbers(settings):
    # MAP-Elites with its default (mutation) emitter reproduces the pre-emitter algorithm bit for
    # bit: init splits key -> (population, evaluation), a step splits key -> (emit, evaluation)
    # and emit splits key_emit -> (parents, mutation).
    algorithm = _algorithm(batch_size=12, initial_batch_size=24, **settings)
    config, hyper = algorithm.config, MutationHyper(sigma=0.1, rate_redraw_probability=0.5)
    state = jax.jit(algorithm.init)(jax.random.key(7), hyper)
    archive = jax.jit(_old_init, static_argnums=(1, 2))(jax.random.key(7), TASK, config, hyper)
    chex.assert_trees_all_equal(state.archive, archive)
    step = jax.jit(algorithm.step)
    old_step = jax.jit(_old_step, static_argnums=(2, 3))
    for generation in range(3):
        key = jax.random.fold_in(jax.random.key(7), generation)
        state, _ = step(key, state, hyper)
        archive = old_step(key, archive, TASK, config, hyper)
        for new, old in zip(
            jax.tree_util.tree_leaves(state.archive),
            jax.tree_util.tree_leaves(archive),
            strict=True,
        ):
            np.testing.assert_array_equal(new, old)
    assert int(jnp.sum(jnp.isfinite(archive.fitness))) > 0
    # no emitter state: the state (and so its checkpoints) keeps its four fields
    assert type(state) is me.MapElitesState
    assert [f.name for f in dataclasses.fields(state)] == [
        "archive",
        "evaluated_at",
        "generation",
        "num_evaluations",
    ]


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
    state = jax.jit(algorithm.init)(jax.random.key(0), algorithm.default_hyper)
    state, metrics = jax.jit(algorithm.step)(jax.random.key(1), state, algorithm.default_hyper)
    fitness = np.asarray(state.archive.fitness)
    assert not np.isnan(fitness).any() and not np.isposinf(fitness).any()
    assert int(metrics["num_invalid"]) == 8
    assert np.isfinite(float(metrics["qd_score"]))


def test_self_adaptive_rates_are_carried_and_redrawn():
    algorithm = me.MapElites(
        me.MapElitesConfig(
            archive=GRID,
            batch_size=64,
            initial_batch_size=64,
            mutation=MutationConfig(self_adaptive=True),
        ),
        TASK,
    )
    hyper = MutationHyper(rate_min=1e-3, rate_max=1e-1, rate_redraw_probability=0.5)
    state = jax.jit(algorithm.init)(jax.random.key(0), hyper)
    rates = np.asarray(state.archive.genomes.rates)[np.isfinite(np.asarray(state.archive.fitness))]
    assert rates.min() >= 1e-3 and rates.max() <= 1e-1 and rates.std() > 0  # spread at init
    state, metrics = jax.jit(algorithm.step)(jax.random.key(1), state, hyper)
    assert 1e-3 <= float(metrics["mean_p_disconnect"]) <= 1e-1


def test_config_and_task_mismatch_fail_before_compiling():
    with pytest.raises(ValueError, match="descriptor dimensions"):
        me.MapElites(me.MapElitesConfig(archive=GridSpec((0.0,), (1.0,), (5,))), TASK)
    with pytest.raises(ValueError, match="forward_prune"):
        me.MapElites(me.MapElitesConfig(archive=GRID), KinematicArm(num_joints=3))
    with pytest.raises(ValueError, match="batch_size"):
        me.MapElitesConfig(archive=GRID, batch_size=0)
    with pytest.raises(ValueError, match="forward_prune"):
        em.MutationEmitter(KinematicArm(num_joints=3))
    with pytest.raises(TypeError, match="has no init"):
        me.MapElites(me.MapElitesConfig(archive=GRID), TASK, emitter=object())


@pytest.mark.parametrize(
    "mutation",
    [
        # an opt-in path (map_elites.mutation_block, off by default): 18 s cold, so slow
        pytest.param(MutationConfig(), marks=pytest.mark.slow),
        # the same blocking with one more per-individual leaf (the rates)
        pytest.param(MutationConfig(self_adaptive=True), marks=pytest.mark.slow),
    ],
    ids=["fixed-rates", "self-adaptive"],
)
def test_mutation_blocks_give_the_vmapped_offspring(mutation):
    # lax.map in blocks (with a remainder block: 10 = 4 + 4 + 2) mutates every child from its
    # own key, exactly as one vmap over the batch (bit for bit as optimised programs, which XLA
    # compiles alike; the tests' cheap compile mode need not).
    hyper = dataclasses.replace(HYPER, sigma=0.1, rate_redraw_probability=0.5)
    state = jax.jit(_algorithm(mutation=mutation).init)(jax.random.key(0), hyper)
    emitters = (
        em.MutationEmitter(TASK, batch_size=10, mutation=mutation),
        em.MutationEmitter(TASK, batch_size=10, mutation=mutation, mutation_block=4),
    )
    with optimized_compilation():
        emitted = [
            jax.jit(lambda k, a, e=e: e.emit(k, a, None, hyper)[0])(
                jax.random.key(1), state.archive
            )
            for e in emitters
        ]
    chex.assert_trees_all_equal(*emitted)
    assert float(jnp.max(jnp.abs(emitted[0].params["params"]["Dense_0"]["kernel"]))) > 0
    with pytest.raises(ValueError, match="mutation_block"):
        me.MapElitesConfig(archive=GRID, mutation_block=0)
    with pytest.raises(ValueError, match="mutation_block"):
        em.MutationEmitter(TASK, mutation_block=True)


def test_algorithms_are_static_and_compare_by_value():
    config = me.MapElitesConfig(archive=GRID, batch_size=32)
    default = me.MapElites(config, TASK)
    explicit = me.MapElites(config, TASK, me.mutation_emitter(config, TASK))
    assert default == explicit and hash(default) == hash(explicit)
    assert default.emitter == em.MutationEmitter(TASK, batch_size=32)
    assert default.default_hyper == MutationHyper()
    assert default != me.MapElites(
        dataclasses.replace(config, mutation_block=8),
        TASK,
        me.mutation_emitter(dataclasses.replace(config, mutation_block=8), TASK),
    )
    # ME-ES: sigma_init and learning_rate are hyper, so runs differing in them compare equal
    es = me.ESEmitterConfig(population_size=8, restart_every=3)
    first, second = me.MapElitesES(config, es, TASK), me.MapElitesES(config, es, TASK)
    assert first == second and hash(first) == hash(second)
    assert first != me.MapElitesES(config, dataclasses.replace(es, restart_every=4), TASK)
    assert isinstance(first.emitter, em.MixEmitter) and first.emitter.batch_size == 32 + 8
    alone = me.MapElitesES(config, dataclasses.replace(es, use_mutation_emitter=False), TASK)
    assert isinstance(alone.emitter, em.ESEmitter) and alone.emitter.batch_size == 8
    assert (
        first.default_hyper
        == alone.default_hyper
        == em.MapElitesESHyper(mutation=MutationHyper(), sigma_init=0.05, learning_rate=0.05)
    )


def test_hyper_errors_are_clear():
    es = me.ESEmitterConfig(population_size=8)
    algorithm = me.MapElitesES(SMALL_CONFIG, es, SMALL_TASK)
    with pytest.raises(TypeError, match="sigma_init"):
        algorithm.init(jax.random.key(0), MutationHyper())
    with pytest.raises(TypeError, match="MutationHyper"):
        em.mutation_hyper(em.MapElitesESHyper().replace(mutation=None))
    with pytest.raises(ValueError, match="sigma_init and learning_rate must be > 0"):
        em.validate_es_hyper(em.MapElitesESHyper(sigma_init=0.0))
    with pytest.raises(ValueError, match="distribution-based"):
        me.ESEmitterConfig(strategy="simple_ga")
    with pytest.raises(ValueError, match="restart_every"):
        me.ESEmitterConfig(restart_every=0)
    # checked before any strategy is built (OpenES asserted an even population inside evosax)
    for strategy in ("open_es", "pgpe", "ars"):
        with pytest.raises(ValueError, match="refuses population_size=5: Population size must"):
            me.ESEmitterConfig(strategy=strategy, population_size=5)
    me.ESEmitterConfig(strategy="snes", population_size=5)  # others take any size
    with pytest.raises(
        ValueError, match=r"optimizer must be one of \['sgd', 'adam'\], got 'adamw'"
    ):
        me.ESEmitterConfig(optimizer="adamw")
    with pytest.raises(ValueError, match="search_space must be one of"):
        me.ESEmitterConfig(search_space="masked")


@pytest.mark.parametrize("mixed", [True, pytest.param(False, marks=pytest.mark.slow)])
def test_es_emitter_restarts_and_learns_from_its_own_samples(mixed):
    emitter = me.ESEmitterConfig(population_size=8, restart_every=2, use_mutation_emitter=mixed)
    algorithm = me.MapElitesES(SMALL_CONFIG, emitter, SMALL_TASK)
    hyper = algorithm.default_hyper
    state = jax.jit(algorithm.init)(jax.random.key(0), hyper)
    es_state = lambda s: s.emitter_state[1] if mixed else s.emitter_state
    assert int(es_state(state).age) == 2  # due: the first emit centres the strategy
    chex.clear_trace_counter()

    @jax.jit
    @chex.assert_max_traces(n=1)
    def step(key, state):
        return algorithm.step(key, state, hyper)

    previous = np.asarray(state.archive.fitness)
    ages, means = [], []
    for generation in range(4):
        state, metrics = step(jax.random.key(generation), state)
        fitness = np.asarray(state.archive.fitness)
        assert (fitness >= previous).all()
        previous = fitness
        ages.append(int(es_state(state).age))
        means.append(np.asarray(es_state(state).strategy.mean))
    assert ages == [1, 2, 1, 2]  # generations told since the last centring (every 2)
    assert not np.array_equal(means[0], means[1])  # told its fitness: the mean moved
    assert int(state.num_evaluations) == 16 + 4 * (16 if mixed else 8)
    assert 0 <= int(metrics["es_num_inserted"]) <= 8
    assert np.isfinite(float(metrics["es_max_fitness"]))
    # the ES searches the centring elite's active weights only (search_space="unmasked")
    masks = jax.tree_util.tree_map(np.asarray, es_state(state).masks)
    flat_masks = flatten_util.ravel_pytree(
        jax.tree_util.tree_map(lambda m: m.astype(np.float32), masks)
    )[0]
    assert np.all(np.asarray(es_state(state).strategy.mean)[flat_masks == 0] == 0)
    # the emitter state goes through a checkpoint and back
    with tempfile.TemporaryDirectory() as directory:
        checkpoint.save(directory, 4, state)
        restored = checkpoint.restore(
            directory, 4, jax.eval_shape(algorithm.init, jax.random.key(0), hyper)
        )
    chex.assert_trees_all_equal(restored, state)


def _restated_me_es_step(key, state, task, config, es_config, hyper):
    """One generation of mutation + ES emitters, stated directly: pins the key layout and that
    each emitter sees its own slice."""
    es = em.ESEmitter(es_config, task)
    adapter = es.strategy(hyper)
    key_emit, key_eval = jax.random.split(key)
    key_mutation, key_es = jax.random.split(key_emit)
    key_centre, key_ask, key_tell = jax.random.split(key_es, 3)
    archive, (_, es_state) = state.archive, state.emitter_state
    key_pick, key_init = jax.random.split(key_centre)
    elite = sample(key_pick, archive, 1)[0]
    fresh = adapter.init(key_init, elite.params, elite.masks)
    restart = es_state.age >= es_config.restart_every
    pick = lambda new, old: jnp.where(restart, new, old)
    strategy = jax.tree_util.tree_map(pick, fresh, es_state.strategy)
    masks = jax.tree_util.tree_map(pick, elite.masks, es_state.masks)
    rates = pick(elite.rates, es_state.rates)
    samples, strategy = adapter.ask(key_ask, strategy, masks)
    num_es = es_config.population_size
    mutated = _old_emit(key_mutation, archive, task, config, mutation=hyper.mutation)
    es_offspring = Population(
        adapter.unravel_population(samples),
        jax.tree_util.tree_map(lambda m: jnp.broadcast_to(m, (num_es, *m.shape)), masks),
        jnp.broadcast_to(rates, (num_es, 2)),
    )
    offspring = jax.tree_util.tree_map(lambda a, b: jnp.concatenate([a, b]), mutated, es_offspring)
    result = task.evaluate(key_eval, offspring)
    archive, _ = add(config.archive, archive, offspring, result)
    strategy, _ = adapter.tell(key_tell, samples, result.fitness[-num_es:], strategy, masks)
    return archive, strategy.mean, masks


def _old_emit(key, archive, task, config, mutation):
    key_parents, key_mutate = jax.random.split(key)
    parents = sample(key_parents, archive, config.batch_size)
    keys = jax.random.split(key_mutate, config.batch_size)
    return jax.vmap(
        lambda k, parent: mutate(k, parent, task.maskable(), config.mutation, mutation, task.spec)
    )(keys, parents)


def test_me_es_generation_matches_its_statement():
    es_config = me.ESEmitterConfig(population_size=8, restart_every=2)
    algorithm = me.MapElitesES(SMALL_CONFIG, es_config, SMALL_TASK)
    hyper = em.MapElitesESHyper(
        mutation=MutationHyper(sigma=0.1), sigma_init=0.1, learning_rate=0.02
    )
    state = exact_jit(algorithm.init)(jax.random.key(3), hyper)
    step = exact_jit(algorithm.step)
    restated = exact_jit(_restated_me_es_step, static_argnums=(2, 3, 4))
    for generation in range(3):  # a centring, a plain generation, another centring
        key = jax.random.fold_in(jax.random.key(3), generation)
        archive, mean, masks = restated(key, state, SMALL_TASK, SMALL_CONFIG, es_config, hyper)
        state, _ = step(key, state, hyper)
        chex.assert_trees_all_equal(state.archive, archive)
        np.testing.assert_array_equal(state.emitter_state[1].strategy.mean, mean)
        chex.assert_trees_all_equal(state.emitter_state[1].masks, masks)


def test_mix_splits_keys_and_slices_and_renames_shared_metrics():
    es_config = me.ESEmitterConfig(population_size=8, restart_every=5)
    first, second = em.ESEmitter(es_config, SMALL_TASK), em.ESEmitter(es_config, SMALL_TASK)
    mix = em.MixEmitter((em.MutationEmitter(SMALL_TASK, batch_size=4), first, second))
    algorithm = me.MapElites(SMALL_CONFIG, SMALL_TASK, mix)
    hyper = algorithm.default_hyper
    assert hyper == em.MapElitesESHyper()
    state = exact_jit(algorithm.init)(jax.random.key(0), hyper)
    assert state.emitter_state[0] is None
    key = jax.random.key(1)
    offspring, emitted = exact_jit(lambda k, s: mix.emit(k, state.archive, s, hyper))(
        key, state.emitter_state
    )
    assert offspring.size == 20
    keys = jax.random.split(key, 3)
    alone, es_state = exact_jit(lambda k, s: second.emit(k, state.archive, s, hyper))(
        keys[2], state.emitter_state[2]
    )
    chex.assert_trees_all_equal(offspring[12:], alone)
    chex.assert_trees_all_equal(emitted[2], es_state)
    fitness = jnp.arange(20, dtype=jnp.float32)
    result = EvalResult(fitness, jnp.zeros((20, 2)), {})
    inserted = jnp.arange(20) % 3 == 0
    updated, metrics = mix.update(key, emitted, offspring, result, inserted, hyper)
    assert sorted(metrics) == [
        "es_max_fitness_1",
        "es_max_fitness_2",
        "es_num_inserted_1",
        "es_num_inserted_2",
    ]
    assert float(metrics["es_max_fitness_1"]) == 11.0 and float(metrics["es_max_fitness_2"]) == 19.0
    assert int(metrics["es_num_inserted_1"]) == 2 and int(metrics["es_num_inserted_2"]) == 3
    told, _ = second.update(
        keys[2],
        es_state,
        alone,
        EvalResult(fitness[12:], jnp.zeros((8, 2)), {}),
        inserted[12:],
        hyper,
    )
    chex.assert_trees_all_equal(updated[2], told)


def test_me_es_builder_puts_sigma_and_learning_rate_in_the_hyper():
    from synprune_jax.config import ConfigError, apply_overrides
    from synprune_jax.experiments import get_experiment

    experiment = get_experiment("me-es")
    built = [
        experiment.build(apply_overrides(experiment.default_config(), overrides))
        for overrides in (
            ["es_emitter.sigma_init=0.2", "es_emitter.learning_rate=0.01"],
            ["mutation.sigma=0.3"],
        )
    ]
    assert built[0].algorithm == built[1].algorithm  # one compiled group in a sweep
    assert built[0].hyper == em.MapElitesESHyper(
        mutation=dataclasses.replace(built[1].hyper.mutation, sigma=0.1),
        sigma_init=0.2,
        learning_rate=0.01,
    )
    assert built[1].hyper.mutation.sigma == 0.3 and built[1].hyper.sigma_init == 0.05
    config = apply_overrides(experiment.default_config(), ["es_emitter.sigma_init=0"])
    with pytest.raises(ConfigError, match="sigma_init and learning_rate must be > 0"):
        experiment.build(config)
