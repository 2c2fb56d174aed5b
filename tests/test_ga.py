"""Tests for the truncation GA (synprune_jax.algorithms.ga) and its experiments."""

import dataclasses
import json

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from synprune_jax.algorithms import ga as ga_lib
from synprune_jax.cli import main
from synprune_jax.tasks import KinematicArm
from synprune_jax.types import Population
from synprune_jax.variation import MutationConfig, MutationHyper

ARM = KinematicArm(num_joints=4, genotype="mlp", hidden_sizes=(8,))


def _pair():
    first = Population(
        params={"a": jnp.zeros(64), "b": jnp.zeros((4, 4))},
        masks={"a": jnp.zeros(64, bool), "b": jnp.zeros((4, 4), bool)},
        rates=jnp.asarray([0.1, 0.2]),
    )
    second = Population(
        params={"a": jnp.ones(64), "b": jnp.ones((4, 4))},
        masks={"a": jnp.ones(64, bool), "b": jnp.ones((4, 4), bool)},
        rates=jnp.asarray([0.3, 0.4]),
    )
    return first, second


def test_uniform_crossover_moves_weight_and_mask_together():
    first, second = _pair()
    child = ga_lib.uniform_crossover(jax.random.key(0), first, second)
    for name in ("a", "b"):
        params, masks = np.asarray(child.params[name]), np.asarray(child.masks[name])
        np.testing.assert_array_equal(params == 1.0, masks)  # a coordinate comes whole
    taken = np.asarray(child.masks["a"]).mean()
    assert 0.2 < taken < 0.8  # both parents contribute
    np.testing.assert_array_equal(np.asarray(child.rates), np.float32([0.1, 0.2]))


def test_layer_mask_crossover_takes_whole_leaves():
    first, second = _pair()
    maskable = {"a": True, "b": False}
    seen = set()
    for seed in range(8):
        child = ga_lib.layer_mask_crossover(jax.random.key(seed), first, second, maskable)
        mask_a = np.asarray(child.masks["a"])
        assert mask_a.all() or (~mask_a).all()
        seen.add(bool(mask_a.all()))
        assert not np.asarray(child.masks["b"]).any()  # not maskable: from the first parent
        np.testing.assert_array_equal(np.asarray(child.params["a"]), 0.0)  # weights: first
    assert seen == {True, False}


def test_config_validation():
    with pytest.raises(ValueError, match="between 1 and P - 1"):
        ga_lib.GAConfig(population_size=4, elite_fraction=1.0)
    with pytest.raises(ValueError, match="crossover"):
        ga_lib.GAConfig(crossover="two-point")
    with pytest.raises(ValueError, match="needs elites"):
        ga_lib.TruncationGA(ga_lib.GAConfig(init="archive"), ARM)
    with pytest.raises(ValueError, match="direct genotype"):
        ga_lib.TruncationGA(ga_lib.GAConfig(), KinematicArm(genotype="angles"))
    with pytest.raises(ValueError, match="crossover_rate must be in"):
        ga_lib.validate_hyper(ga_lib.GAHyper(crossover_rate=1.5))
    algorithm = ga_lib.TruncationGA(ga_lib.GAConfig(population_size=4), ARM)
    with pytest.raises(ValueError, match="crossover_rate must be in"):
        algorithm.init(jax.random.key(0), ga_lib.GAHyper(crossover_rate=-0.1))
    jax.jit(ga_lib.validate_hyper)(ga_lib.GAHyper(crossover_rate=1.5))  # traced: not checked
    assert algorithm.default_hyper == ga_lib.GAHyper(MutationHyper(), 0.5)


def _elites(count=3, seed=5):
    params = jax.tree_util.tree_map(
        np.asarray, jax.vmap(ARM.init_params)(jax.random.split(jax.random.key(seed), count))
    )
    masks = jax.tree_util.tree_map(lambda leaf: np.asarray(leaf) > 0, params)
    return {
        "params": params,
        "masks": masks,
        "rates": np.full((count, 2), 0.03, np.float32),
        "fitness": np.zeros(count),
    }


def test_algorithm_is_static_and_compares_by_value():
    config = ga_lib.GAConfig(population_size=8, init="archive")
    first = ga_lib.TruncationGA(config, ARM, _elites())
    second = ga_lib.TruncationGA(config, ARM, _elites())  # equal content, other arrays
    assert first == second and hash(first) == hash(second)
    assert first != ga_lib.TruncationGA(config, ARM, _elites(seed=6))
    assert first != ga_lib.TruncationGA(ga_lib.GAConfig(population_size=8), ARM)
    assert set(first.elites) == {"params", "masks", "rates"}  # other keys dropped
    beta = ga_lib.TruncationGA(ga_lib.GAConfig(population_size=8), ARM, _elites())
    assert beta.elites is None and beta == ga_lib.TruncationGA(
        ga_lib.GAConfig(population_size=8), ARM
    )
    with pytest.raises(dataclasses.FrozenInstanceError):
        first.config = config


def test_builder_puts_crossover_rate_and_mutation_in_the_hyper():
    from synprune_jax import config as config_lib
    from synprune_jax.experiments import get_experiment

    entry = get_experiment("ga-arm")

    def build(*overrides):
        return entry.build(config_lib.apply_overrides(entry.default_config(), list(overrides)))

    low = build("ga.crossover_rate=0.3", "mutation.sigma=0.05")
    high = build("ga.crossover_rate=0.7", "mutation.sigma=0.2")
    assert low.algorithm == high.algorithm and hash(low.algorithm) == hash(high.algorithm)
    assert low.hyper == ga_lib.GAHyper(
        MutationHyper(
            sigma=0.05,
            p_disconnect=0.02,
            p_connect=0.01,
            rate_redraw_probability=0.1,
            rate_min=1e-4,
            rate_max=0.2,
        ),
        0.3,
    )
    assert high.hyper.crossover_rate == 0.7 and high.hyper.mutation.sigma == 0.2
    assert build("ga.crossover=layer").algorithm != low.algorithm


def test_archive_init_starts_from_the_elites_best_first():
    elites = _elites()
    algorithm = ga_lib.TruncationGA(ga_lib.GAConfig(population_size=8, init="archive"), ARM, elites)
    population = algorithm.initial_population(
        jax.random.key(0), ga_lib.GAHyper(MutationHyper(sigma=0.1))
    )
    changed = []
    for stored, leaf in zip(
        jax.tree_util.tree_leaves(elites["params"]),
        jax.tree_util.tree_leaves(population.params),
        strict=True,
    ):
        np.testing.assert_array_equal(np.asarray(leaf)[:3], stored)  # the elites as they are
        changed.append(np.asarray(leaf)[3:] != stored[[0, 1, 2, 0, 1]])  # cycled copies
    # the copies are mutated (Gaussian noise on active weights): every copy differs
    assert all(any(c[i].any() for c in changed) for i in range(5))


@pytest.fixture(scope="module")
def ga_run():
    config = ga_lib.GAConfig(population_size=16, crossover="uniform")
    hyper = ga_lib.GAHyper(MutationHyper(sigma=0.1, p_disconnect=0.05), crossover_rate=0.5)
    algorithm = ga_lib.TruncationGA(config, ARM)
    state = jax.jit(lambda key: algorithm.init(key, hyper))(jax.random.key(0))

    @jax.jit
    @chex.assert_max_traces(n=1)
    def step(key, state):
        return algorithm.step(key, state, hyper)

    states, history = [state], []
    for g in range(6):
        state, metrics = step(jax.random.key(g + 1), state)
        states.append(state)
        history.append({k: float(v) for k, v in metrics.items()})
    return algorithm, states, history


def test_truncation_keeps_the_best_half_unchanged(ga_run):
    algorithm, states, history = ga_run
    for before, after in zip(states[:-1], states[1:], strict=True):
        order = np.argsort(-np.asarray(before.fitness), kind="stable")[:8]
        np.testing.assert_array_equal(
            np.asarray(after.fitness[:8]), np.asarray(before.fitness)[order]
        )
        for leaf_before, leaf_after in zip(
            jax.tree_util.tree_leaves(before.population),
            jax.tree_util.tree_leaves(after.population),
            strict=True,
        ):
            np.testing.assert_array_equal(
                np.asarray(leaf_after)[:8], np.asarray(leaf_before)[order]
            )
    best = [h["max_fitness"] for h in history]
    assert best == sorted(best)
    assert int(states[-1].num_evaluations) == 16 + 6 * 8
    # recorded fitness is the task's fitness of the stored individual
    final = states[-1]
    np.testing.assert_allclose(
        np.asarray(ARM.evaluate(jax.random.key(0), final.population).fitness),
        np.asarray(final.fitness),
        rtol=1e-6,
    )


def test_each_member_remembers_the_generation_that_evaluated_it(ga_run):
    _, states, _ = ga_run
    assert np.asarray(states[0].evaluated_at).tolist() == [0] * 16
    for generation, (before, after) in enumerate(zip(states[:-1], states[1:], strict=True), 1):
        order = np.argsort(-np.asarray(before.fitness), kind="stable")[:8]
        expected = [*np.asarray(before.evaluated_at)[order], *[generation] * 8]
        assert np.asarray(after.evaluated_at).tolist() == expected


def test_initial_population_is_beta_pruned(ga_run):
    algorithm, states, _ = ga_run
    density = jax.vmap(lambda m: jnp.mean(m["params"]["Dense_0"]["kernel"]))(
        states[0].population.masks
    )
    assert float(jnp.std(density)) > 0.15  # spread over sparsities (uniform: std 0.29)


@pytest.mark.slow  # two CLI runs (~11 s); the archive start is tested just above
def test_cli_ga_from_map_elites_archive(tmp_path):
    from synprune_jax.experiments import get_experiment
    from synprune_jax.experiments.es import load_archive_elites

    me_dir = tmp_path / "me"
    me_config = get_experiment("me-arm").default_config()
    me_config["task"] = {
        "name": "arm",
        "num_joints": 4,
        "genotype": "mlp",
        "hidden_sizes": [8],
        "descriptors": ["sparsity", "disconnected_fraction"],
    }
    me_config["map_elites"].update(batch_size=16, initial_batch_size=32, forward_prune=True)
    me_config["archive"]["resolution"] = [6, 6]
    me_config["run"].update(num_generations=5, chunk_size=5, progress=False)
    (tmp_path / "me.json").write_text(json.dumps(me_config))
    assert main(["run", "--config", str(tmp_path / "me.json"), "--out", str(me_dir)]) == 0
    elites = load_archive_elites(str(me_dir))
    assert elites["experiment"] == "me-arm"
    assert list(elites["fitness"]) == sorted(elites["fitness"], reverse=True)

    ga_args = [
        "ga-arm",
        "--set",
        "task.num_joints=4",
        "--set",
        "task.hidden_sizes=8",
        "--set",
        "ga.population_size=16",
        "--set",
        "ga.init=archive",
        "--set",
        f"ga.archive_dir={me_dir}",
        "--set",
        "run.chunk_size=3",
        "--set",
        "run.checkpoint_every=3",
        "--set",
        "run.progress=false",
    ]
    full = tmp_path / "full"  # resume is checked for every experiment in test_experiments.py
    assert main(["run", *ga_args, "--set", "run.num_generations=6", "--out", str(full)]) == 0
    for name in ("summary.json", "summary.md", "curves.png", "fitness_vs_density.png", "masks.png"):
        assert (full / name).stat().st_size > 0, name
    summary = json.loads((full / "summary.json").read_text())
    # the GA starts from the archive's best elite, so it can only match or beat it
    assert summary["max_fitness"] >= float(elites["fitness"][0]) - 1e-6


def test_archive_init_rejects_a_different_network(tmp_path):
    elites = {
        "params": {"w": np.zeros((3, 5))},
        "masks": {"w": np.ones((3, 5), bool)},
        "rates": np.zeros((3, 2), np.float32),
    }
    config = ga_lib.GAConfig(
        population_size=4, init="archive", mutation=MutationConfig(forward_prune=False)
    )
    with pytest.raises(ValueError, match="do not match"):
        ga_lib.TruncationGA(config, ARM, elites=elites)
    # through the CLI: init=archive without a directory is a config error, nothing runs
    assert main(["run", "ga-arm", "--set", "ga.init=archive", "--out", str(tmp_path / "none")]) == 2
    assert not (tmp_path / "none").exists()
