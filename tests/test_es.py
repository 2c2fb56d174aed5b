"""Tests for the evosax adapter and masked ES with pruning (synprune_jax.algorithms.es)."""

import dataclasses

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from synprune_jax import pruning
from synprune_jax.algorithms import es as es_lib
from synprune_jax.tasks import KinematicArm

TARGET = jnp.asarray([0.5, -1.0, 2.0, 0.25, -0.75, 1.5], jnp.float32)


def _quadratic_fitness(x):  # maximised; evosax minimises its negation
    return -jnp.sum((x - jnp.broadcast_to(TARGET, x.shape)) ** 2, axis=-1)


def _run_adapter(adapter, masks, steps, key=0):
    template = {"w": jnp.zeros(6)}
    state = adapter.init(jax.random.key(key), template, masks)
    for g in range(steps):
        k_ask, k_tell = jax.random.split(jax.random.key(100 + g))
        population, state = adapter.ask(k_ask, state, masks)
        state, _ = adapter.tell(k_tell, population, _quadratic_fitness(population), state, masks)
    return state


def _run_evosax(cls, kwargs, params, steps, key=0):
    es = cls(population_size=8, solution=jnp.zeros(6), **kwargs)
    state = es.init(jax.random.key(key), jnp.zeros(6), params)
    for g in range(steps):
        k_ask, k_tell = jax.random.split(jax.random.key(100 + g))
        with jax.numpy_rank_promotion("allow"):
            population, state = es.ask(k_ask, state, params)
            state, _ = es.tell(k_tell, population, -_quadratic_fitness(population), state, params)
    return state


FULL = {"w": jnp.ones(6, bool)}
ARM = KinematicArm(num_joints=8, genotype="angles")


@pytest.mark.parametrize("search_space", ["all", "unmasked"])
def test_adapter_matches_evosax_open_es(search_space):
    import optax
    from evosax.algorithms import Open_ES

    adapter = es_lib.MaskedStrategy(
        "open_es",
        8,
        {"w": jnp.zeros(6)},
        search_space=search_space,
        sigma_init=0.1,
        optimizer="sgd",
        learning_rate=0.05,
    )
    ours = _run_adapter(adapter, FULL, 5)
    reference = _run_evosax(
        Open_ES,
        dict(optimizer=optax.sgd(0.05), std_schedule=optax.constant_schedule(0.1)),
        Open_ES(8, jnp.zeros(6)).default_params,
        5,
    )
    np.testing.assert_array_equal(np.asarray(ours.mean), np.asarray(reference.mean))
    # sign flip: our best fitness is the maximised one
    _, best = adapter.best(ours)
    assert float(best) == pytest.approx(-float(reference.best_fitness))
    assert float(best) <= 0.0


def test_adapter_matches_evosax_cma_es_and_improves():
    from evosax.algorithms import CMA_ES

    adapter = es_lib.MaskedStrategy("CMA_ES", 8, {"w": jnp.zeros(6)}, sigma_init=0.3)
    ours = _run_adapter(adapter, FULL, 30)
    params = CMA_ES(8, jnp.zeros(6)).default_params.replace(std_init=jnp.asarray(0.3))
    reference = _run_evosax(CMA_ES, {}, params, 30)
    np.testing.assert_allclose(
        np.asarray(ours.mean), np.asarray(reference.mean), rtol=1e-5, atol=1e-6
    )
    # a wrong sign would walk away from the optimum
    start = float(-jnp.sum(TARGET**2))
    assert float(_quadratic_fitness(ours.mean)) > 0.5 * start * 0.1


def test_unmasked_space_freezes_masked_coordinates_at_zero():
    masks = {"w": jnp.asarray([True, False, True, False, True, True])}
    adapter = es_lib.MaskedStrategy("sep_cma_es", 8, {"w": jnp.zeros(6)}, sigma_init=0.3)
    state = adapter.init(jax.random.key(0), {"w": jnp.ones(6)}, masks)
    np.testing.assert_array_equal(np.asarray(state.mean), [1, 0, 1, 0, 1, 1])
    for g in range(40):
        population, state = adapter.ask(jax.random.key(g), state, masks)
        np.testing.assert_array_equal(np.asarray(population[:, [1, 3]]), 0.0)
        state, _ = adapter.tell(
            jax.random.key(1000 + g), population, _quadratic_fitness(population), state, masks
        )
    mean = np.asarray(state.mean)
    np.testing.assert_array_equal(mean[[1, 3]], 0.0)
    np.testing.assert_allclose(mean[[0, 2, 4, 5]], np.asarray(TARGET)[[0, 2, 4, 5]], atol=0.2)


@pytest.mark.parametrize(
    "strategy", ["open_es", "cma_es", "sep_cma_es", "snes", "pgpe", "ars", "simple_ga", "de"]
)
def test_state_stays_consistent_after_a_prune(strategy):
    template = {"w": jnp.zeros(6)}
    adapter = es_lib.MaskedStrategy(strategy, 8, template, sigma_init=0.2)
    initial = {"w": jnp.arange(1.0, 7.0)}
    if adapter.population_based:
        population = adapter.initial_population(jax.random.key(1), initial, FULL)
        state = adapter.init(
            jax.random.key(0), initial, FULL, population, _quadratic_fitness(population)
        )
    else:
        state = adapter.init(jax.random.key(0), initial, FULL)
    for g in range(3):
        population, state = adapter.ask(jax.random.key(g), state, FULL)
        state, _ = adapter.tell(
            jax.random.key(50 + g), population, _quadratic_fitness(population), state, FULL
        )
    pruned = {"w": jnp.asarray([True, True, False, True, False, True])}
    state = adapter.project(state, pruned)
    np.testing.assert_array_equal(np.asarray(adapter.mean_flat(state))[[2, 4]], 0.0)
    for g in range(5):
        population, state = adapter.ask(jax.random.key(10 + g), state, pruned)
        np.testing.assert_array_equal(np.asarray(population[:, [2, 4]]), 0.0)
        state, _ = adapter.tell(
            jax.random.key(60 + g), population, _quadratic_fitness(population), state, pruned
        )
        assert np.isfinite(np.asarray(adapter.mean_flat(state))).all()
        np.testing.assert_array_equal(np.asarray(adapter.mean_flat(state))[[2, 4]], 0.0)


def test_non_finite_fitness_is_the_worst():
    loss = es_lib._shaped_loss(jnp.asarray([1.0, jnp.nan, -2.0, jnp.inf]))
    np.testing.assert_array_equal(np.asarray(loss), [-1.0, 3.0, 2.0, 3.0])


def test_coordinate_std_of_cma_and_snr_pruning_order():
    adapter = es_lib.MaskedStrategy("cma_es", 8, {"w": jnp.zeros(4)}, sigma_init=0.5)
    state = adapter.init(jax.random.key(0), {"w": jnp.zeros(4)}, {"w": jnp.ones(4, bool)})
    state = state.replace(
        C=jnp.diag(jnp.asarray([1.0, 4.0, 9.0, 16.0])), mean=jnp.asarray([1.0, 2.0, 2.0, 4.0])
    )
    np.testing.assert_allclose(np.asarray(adapter.coordinate_std_flat(state)), [0.5, 1.0, 1.5, 2.0])
    # snr = |mean| / std = [2, 2, 1.33, 2]: the third goes first, then ties by index
    snr = {"w": jnp.asarray([2.0, 2.0, 4.0 / 3.0, 2.0])}
    pruned = pruning.prune_to_density_by_score(snr, {"w": jnp.ones(4, bool)}, {"w": True}, 0.5)
    assert pruned["w"].tolist() == [False, True, False, True]


def test_prune_to_density_exact_counts_and_scopes():
    masks = {"a": jnp.ones(10, bool), "b": jnp.ones(4, bool), "bias": jnp.ones(3, bool)}
    maskable = {"a": True, "b": True, "bias": False}
    scores = {"a": jnp.arange(10.0), "b": jnp.asarray([0.5, 0.5, 100.0, 0.1]), "bias": jnp.zeros(3)}
    layer = pruning.prune_to_density_by_score(scores, masks, maskable, 0.5)
    assert layer["a"].tolist() == [False] * 5 + [True] * 5
    assert layer["b"].tolist() == [False, True, True, False]  # 0.1, then first of the 0.5 tie
    assert layer["bias"].tolist() == [True] * 3
    glob = pruning.prune_to_density_by_score(scores, masks, maskable, 0.5, scope="global")
    # 14 maskable, keep floor(7): remove the 7 lowest: b[3]=.1, b[0]=b[1]=.5, a[0..3]
    assert glob["a"].tolist() == [False] * 4 + [True] * 6
    assert glob["b"].tolist() == [False, False, True, False]
    again = pruning.prune_to_density_by_score(scores, layer, maskable, 0.8)
    assert again["a"].tolist() == layer["a"].tolist()  # never regrows


def test_scheduled_density_formulas():
    kw = dict(current_density=1.0, target_density=0.2, prune_amount=0.3, start=10, end=30)
    assert float(pruning.scheduled_density(20, schedule="linear", **kw)) == pytest.approx(0.6)
    assert float(pruning.scheduled_density(20, schedule="cubic", **kw)) == pytest.approx(
        0.2 + 0.8 * 0.125
    )
    assert float(pruning.scheduled_density(5, schedule="cubic", **kw)) == pytest.approx(1.0)
    assert float(pruning.scheduled_density(99, schedule="linear", **kw)) == pytest.approx(0.2)
    assert float(pruning.scheduled_density(0, schedule="constant", **kw)) == pytest.approx(0.7)
    kw["current_density"] = 0.25
    assert float(pruning.scheduled_density(0, schedule="constant", **kw)) == pytest.approx(0.2)
    assert float(pruning.scheduled_density(12, schedule="linear", **kw)) == pytest.approx(0.25)
    with pytest.raises(ValueError, match="unknown schedule"):
        pruning.scheduled_density(12, schedule="exponential", **kw)


def test_magnitude_to_density_is_score_pruning_by_absolute_value():
    params = {"w": jnp.asarray([0.3, -0.1, 0.2, 0.1, -0.4, 0.0]), "b": jnp.zeros(2)}
    masks = {"w": jnp.asarray([True, True, True, True, True, False]), "b": jnp.ones(2, bool)}
    maskable = {"w": True, "b": False}
    for scope in ("layer", "global"):
        by_magnitude = pruning.prune_magnitude_to_density(params, masks, maskable, 0.5, scope=scope)
        # keep floor(0.5 * 6) = 3 of the 5 active: |-0.1| and |0.1| go (ties by index)
        assert by_magnitude["w"].tolist() == [True, False, True, False, True, False]
        assert by_magnitude["b"].tolist() == [True, True]


def test_names_and_config_validation():
    assert es_lib.strategy_class("open_es").__name__ == "Open_ES"
    assert es_lib.strategy_class("de").__name__ == "DifferentialEvolution"
    assert es_lib.strategy_class("sep-cma-es").__name__ == "Sep_CMA_ES"
    assert es_lib.is_population_based("SimpleGA") and not es_lib.is_population_based("SNES")
    with pytest.raises(ValueError, match="unknown evosax strategy"):
        es_lib.strategy_class("nope")
    with pytest.raises(ValueError, match="even"):
        es_lib.ESConfig(strategy="open_es", population_size=7)
    with pytest.raises(ValueError, match="prune_criterion"):
        es_lib.ESConfig(prune_criterion="size")
    with pytest.raises(ValueError, match="does not accept"):
        es_lib.MaskedStrategy("cma_es", 8, {"w": jnp.zeros(3)}, strategy_kwargs={"optimizer": None})
    for bad, message in [
        (dict(sigma_init=0.0), "sigma_init must be > 0"),
        (dict(sigma_min=-0.1), "sigma_min must be >= 0"),
        (dict(learning_rate=0.0), "learning_rate must be > 0"),
        (dict(init_density=0.0), "init_density must be in"),
        (dict(prune_amount=1.5), "prune_amount must be in"),
        (dict(target_density=-0.1), "target_density must be in"),
    ]:
        with pytest.raises(ValueError, match=message):
            es_lib.validate_hyper(es_lib.ESHyper(**bad))
    es_lib.validate_hyper(es_lib.ESHyper())
    # traced values are not checked (a sweep's stacked knobs); concrete ones are, in init too
    jax.jit(es_lib.validate_hyper)(es_lib.ESHyper(sigma_init=-1.0))
    algorithm = es_lib.MaskedES(es_lib.ESConfig(population_size=4), ARM)
    with pytest.raises(ValueError, match="sigma_init must be > 0"):
        algorithm.init(jax.random.key(0), es_lib.ESHyper(sigma_init=-1.0))


def test_algorithm_is_static_and_compares_by_value():
    config = es_lib.ESConfig(population_size=8, prune_every=2)
    first, second = es_lib.MaskedES(config, ARM), es_lib.MaskedES(config, ARM)
    assert first == second and hash(first) == hash(second)
    assert first != es_lib.MaskedES(es_lib.ESConfig(population_size=10, prune_every=2), ARM)
    plain = {"use_antithetic_sampling": False}
    extra = es_lib.MaskedES(config, ARM, strategy_kwargs=plain)
    assert extra != first and extra == es_lib.MaskedES(config, ARM, strategy_kwargs=dict(plain))
    assert first.default_hyper == es_lib.ESHyper()
    with pytest.raises(dataclasses.FrozenInstanceError):
        first.config = config
    # the hyper reaches the evosax instance; the run's own Python values rebuild nothing
    assert first.strategy_for(first.default_hyper) is first.adapter
    bound = first.strategy_for(es_lib.ESHyper(sigma_init=0.3))
    assert bound is not first.adapter and bound.sigma_init == 0.3


def test_builder_splits_the_es_section_into_config_and_hyper():
    from synprune_jax import config as config_lib
    from synprune_jax.config import ConfigError
    from synprune_jax.experiments import es as es_experiment
    from synprune_jax.experiments import get_experiment

    section = es_experiment._es_section(sigma_init=0.2, prune_every=3)
    assert list(section) == [
        field.name for cls in (es_lib.ESConfig, es_lib.ESHyper) for field in dataclasses.fields(cls)
    ]
    config, hyper = es_experiment.es_config_and_hyper(section)
    assert config == es_lib.ESConfig(prune_every=3)
    assert hyper == es_lib.ESHyper(sigma_init=0.2)
    # a missing key takes its default, as before
    assert es_experiment.es_config_and_hyper({"learning_rate": 1})[1] == es_lib.ESHyper(
        learning_rate=1.0
    )

    entry = get_experiment("es-prune-arm")

    def build(*overrides):
        return entry.build(config_lib.apply_overrides(entry.default_config(), list(overrides)))

    low, high = build("es.sigma_init=0.05"), build("es.sigma_init=0.1")
    assert low.algorithm == high.algorithm and hash(low.algorithm) == hash(high.algorithm)
    assert (low.hyper.sigma_init, high.hyper.sigma_init) == (0.05, 0.1)
    assert low.hyper.learning_rate == 0.02 and low.hyper.target_density == 0.25
    assert build("es.population_size=16").algorithm != low.algorithm
    with pytest.raises(ConfigError, match="target_density must be in"):
        build("es.target_density=2")
    hand_written = entry.default_config()  # a config file, not --set (which checks types)
    hand_written["es"]["sigma_init"] = "small"
    with pytest.raises(ConfigError, match="es.sigma_init must be a number"):
        entry.build(hand_written)


@pytest.fixture(scope="module")
def pruned_run():
    config = es_lib.ESConfig(
        strategy="open_es",
        population_size=16,
        prune_every=2,
        prune_schedule="constant",
        prune_criterion="magnitude",
    )
    hyper = es_lib.ESHyper(
        sigma_init=0.1, learning_rate=0.05, prune_amount=0.25, target_density=0.5
    )
    algorithm = es_lib.MaskedES(config, ARM)
    state = jax.jit(lambda key: algorithm.init(key, hyper))(jax.random.key(0))

    @jax.jit
    @chex.assert_max_traces(n=1)
    def step(key, state):
        return algorithm.step(key, state, hyper)

    history = []
    for g in range(8):
        state, metrics = step(jax.random.key(g), state)
        history.append({k: float(v) for k, v in metrics.items()})
    return algorithm, state, history


def test_masked_es_prunes_on_schedule(pruned_run):
    algorithm, state, history = pruned_run
    # 8 genes; every 2 generations floor-density max(0.5, d * 0.75): 8 -> 6 -> 4 -> 4
    assert [h["active_weights"] for h in history] == [8, 6, 6, 4, 4, 4, 4, 4]
    mean = np.asarray(algorithm.adapter.mean_flat(state.strategy))
    active = np.asarray(state.masks["angles"])
    np.testing.assert_array_equal(mean[~active], 0.0)
    assert int(state.num_evaluations) == 8 * 17
    best = [h["best_fitness"] for h in history]
    assert best == sorted(best) and best[-1] == max(h["max_fitness"] for h in history)


def test_masked_es_learns_on_the_arm(pruned_run):
    _, _, history = pruned_run
    assert history[-1]["mean_network_fitness"] > history[0]["mean_network_fitness"]


# The contract test runs es-prune-arm through the runner; the CLI path is tested on the arm.
@pytest.mark.slow
def test_cli_es_prune_run(tmp_path):
    from synprune_jax.cli import main
    from synprune_jax.runner import read_metrics

    args = [
        "es-prune-arm",
        "--set",
        "task.num_joints=4",
        "--set",
        "task.hidden_sizes=8",
        "--set",
        "es.population_size=8",
        "--set",
        "es.prune_every=2",
        "--set",
        "es.prune_start=2",
        "--set",
        "es.prune_end=6",
        "--set",
        "run.chunk_size=3",
        "--set",
        "run.checkpoint_every=3",
        "--set",
        "run.progress=false",
    ]
    full = tmp_path / "full"  # resume is checked for every experiment in test_experiments.py
    assert main(["run", *args, "--set", "run.num_generations=6", "--out", str(full)]) == 0
    metrics = read_metrics(full)
    density = metrics["density"]
    assert density[-1] < density[0] and np.all(np.diff(density) <= 0)  # pruned, never regrown
    # linear schedule to 0.25 between generations 2 and 6: reached at the end
    assert density[-1] <= 0.25 + 1e-6
    for name in ("summary.json", "summary.md", "curves.png", "masks.png"):
        assert (full / name).stat().st_size > 0, name
    assert (
        main(["run", "es-prune-arm", "--set", "es.strategy=nope", "--out", str(tmp_path / "bad")])
        == 2
    )
