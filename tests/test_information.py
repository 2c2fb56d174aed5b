"""Tests for the information measures and the learning-speed study (synprune_jax.analysis)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from synprune_jax.analysis import information as info
from synprune_jax.analysis import learning_speed as speed
from synprune_jax.networks import MLPSpec

LOG = math.log


def test_known_discrete_distribution_exactly():
    x = jnp.asarray([0, 0, 1, 1, 1, 1, 2, 2], jnp.float32)
    expected = -(0.25 * LOG(0.25) * 2 + 0.5 * LOG(0.5))
    assert float(info.entropy(x, 3)) == pytest.approx(expected, rel=1e-6)
    assert float(info.entropy(x, 3, normalize=True)) == pytest.approx(expected / LOG(3), rel=1e-6)
    # explicit range aligned with the integers gives the same bins
    assert float(info.entropy(x, 3, lower=0.0, upper=3.0)) == pytest.approx(expected, rel=1e-6)
    np.testing.assert_allclose(np.asarray(info.histogram(x, 3)), [0.25, 0.5, 0.25])


def test_joint_and_mutual_information_of_a_known_table():
    # p(x, y): (0,0)=1/2, (0,1)=1/4, (1,1)=1/4  -> H(X)=H(.75,.25), H(Y)=H(.5,.5), H(X,Y)=1.5 ln2
    x = jnp.asarray([0, 0, 0, 0, 0, 0, 1, 1], jnp.float32)
    y = jnp.asarray([0, 0, 0, 0, 1, 1, 1, 1], jnp.float32)
    hx = -(0.75 * LOG(0.75) + 0.25 * LOG(0.25))
    hy = LOG(2)
    hxy = 1.5 * LOG(2)
    assert float(info.joint_entropy(x, y, 2)) == pytest.approx(hxy, rel=1e-6)
    mi = hx + hy - hxy
    assert float(info.mutual_information(x, y, 2)) == pytest.approx(mi, rel=1e-5)
    nmi = {
        "sqrt": mi / math.sqrt(hx * hy),
        "min": mi / min(hx, hy),
        "max": mi / max(hx, hy),
        "arithmetic": 2 * mi / (hx + hy),
        "joint": mi / hxy,
    }
    for method, value in nmi.items():
        assert float(info.normalized_mutual_information(x, y, 2, method)) == pytest.approx(
            value, rel=1e-5
        ), method
    with pytest.raises(ValueError, match="unknown method"):
        info.normalized_mutual_information(x, y, 2, "mean")


def test_identical_variables_have_mi_equal_to_entropy():
    x = jax.random.normal(jax.random.key(0), (4000,))
    h = float(info.entropy(x, 16))
    assert float(info.mutual_information(x, x, 16)) == pytest.approx(h, rel=1e-5)
    assert float(info.normalized_mutual_information(x, x, 16)) == pytest.approx(1.0, rel=1e-5)
    # a strictly increasing function keeps the bins' order but not their width: MI stays high
    assert float(info.mutual_information(x, 3.0 * x + 1.0, 16)) == pytest.approx(h, rel=1e-5)


def test_independent_uniform_variables_have_mi_near_zero():
    kx, ky = jax.random.split(jax.random.key(1))
    x = jax.random.uniform(kx, (20000,))
    y = jax.random.uniform(ky, (20000,))
    mi = float(info.mutual_information(x, y, 8))
    # plug-in bias ~ (bins - 1)^2 / (2 T) = 0.0012 nats
    assert 0.0 <= mi < 0.005
    assert float(info.entropy(x, 8, normalize=True)) == pytest.approx(1.0, abs=2e-3)


def test_constant_variable_and_weights():
    assert float(info.entropy(jnp.ones(10), 4)) == 0.0
    assert float(info.normalized_mutual_information(jnp.ones(10), jnp.arange(10.0), 4)) == 0.0
    x = jnp.asarray([0.0, 1.0, 1.0, 5.0])
    # weight 0 drops the last sample: two of three remaining fall in the top bin of [0, 5] x 2
    np.testing.assert_allclose(
        np.asarray(info.histogram(x, 2, lower=0.0, upper=2.0, weights=jnp.asarray([1, 1, 1, 0]))),
        [1 / 3, 2 / 3],
        rtol=1e-6,
    )


def test_layer_activations_match_the_network_and_profile_shapes():
    spec = MLPSpec(input_size=3, output_size=2, hidden_sizes=(5, 4))
    params = spec.init(jax.random.key(0))
    masks = spec.full_masks(params)
    masks = spec.replace_kernels(masks, [k.at[:, 0].set(False) for k in spec.kernels(masks)])
    inputs = jax.random.normal(jax.random.key(1), (64, 3))
    layers = info.layer_activations(spec, params, masks, inputs)
    assert [a.shape for a in layers] == [(64, 5), (64, 4), (64, 2)]
    np.testing.assert_allclose(
        np.asarray(layers[-1]), np.asarray(spec.apply(params, masks, inputs)), rtol=1e-5, atol=1e-6
    )
    profile = jax.jit(lambda p, m, o: info.information_profile(spec, p, m, o, bins=8))(
        params, masks, inputs
    )
    assert [u.shape for u in profile["unit_entropy"]] == [(5,), (4,), (2,)]
    # unit 0 of every layer has no inputs: constant activation, zero entropy
    for unit in profile["unit_entropy"]:
        assert float(unit[0]) == 0.0 and float(unit[1]) > 0.5
    assert profile["layer_action_mi"].shape == (3,)
    assert float(profile["action_mi"]) == pytest.approx(
        float(jnp.mean(profile["layer_action_mi"][:2]))
    )


def test_generations_to_threshold_and_rank_correlation():
    curves = np.asarray([[0, 1, 5, 6], [0, 0, 0, 1], [5, 6, 7, 8], [0, 4, 4, 4]])
    np.testing.assert_array_equal(speed.generations_to_threshold(curves, 5), [3, -1, 1, -1])
    mi = np.asarray([0.1, 0.2, 0.3, 0.4, 0.5])
    generations = np.asarray([9, 7, 5, 3, -1])
    correlation = speed.rank_correlation(mi, generations, num_generations=10)
    assert correlation["reached"] == pytest.approx(-1.0)
    assert correlation["num_reached"] == 4
    # censored: [9, 7, 5, 3, 11] -> ranks [4, 3, 2, 1, 5], sum d^2 = 20, rho = 1 - 120 / 120
    assert correlation["censored"] == pytest.approx(0.0, abs=1e-12)
    rows = speed.learning_speed_table(mi, mi, mi, generations)
    assert [row["network"] for row in rows] == [4, 3, 2, 1, 0]
    assert rows[0]["generations_to_threshold"] is None


def test_learning_speed_study_runs(tmp_path):
    from synprune_jax.algorithms.es import ESConfig, ESHyper
    from synprune_jax.tasks import KinematicArm

    task = KinematicArm(num_joints=3, genotype="mlp", hidden_sizes=(6,))

    def observations(key, population):  # random inputs instead of the arm's constant ones
        return (
            jax.random.normal(key, (population.size, 32, task.input_size)),
            jnp.ones((population.size, 32)),
        )

    study = speed.LearningSpeedStudy(
        task,
        ESConfig(population_size=8, evaluate_mean=False),
        num_networks=4,
        threshold=-0.05,
        bins=6,
        observations_fn=observations,
    )
    assert study.default_hyper == ESHyper()
    hyper = study.default_hyper
    state = jax.jit(lambda key: study.init(key, hyper))(jax.random.key(0))
    assert state.action_mi.shape == (4,) and (np.asarray(state.action_mi) >= 0).all()
    step = jax.jit(lambda key, state: study.step(key, state, hyper))
    for g in range(3):
        state, metrics = step(jax.random.key(g), state)
    first = np.asarray(state.first_reached)
    assert ((first == -1) | ((first >= 0) & (first <= 3))).all()
    assert float(metrics["fraction_reached"]) == pytest.approx((first >= 0).mean())
    assert int(state.num_evaluations) == 8 + 3 * 4 * 8
    path = speed.plot_mi_vs_learning_speed(
        tmp_path / "mi.png", np.asarray(state.action_mi), first, 3
    )
    assert (tmp_path / "mi.png").stat().st_size > 0 and path.endswith("mi.png")


def test_learning_speed_study_is_static_and_takes_the_es_hyper():
    from synprune_jax.algorithms.es import ESConfig, ESHyper
    from synprune_jax.tasks import KinematicArm

    task = KinematicArm(num_joints=3, genotype="mlp", hidden_sizes=(6,))

    def observations(key, population):
        return (
            jax.random.normal(key, (population.size, 16, task.input_size)),
            jnp.ones((population.size, 16)),
        )

    def study(**changes):
        arguments = dict(
            task=task,
            es_config=ESConfig(population_size=4, evaluate_mean=False),
            num_networks=2,
            threshold=-0.05,
            bins=4,
            observations_fn=observations,
        )
        return speed.LearningSpeedStudy(**{**arguments, **changes})

    assert study() == study() and hash(study()) == hash(study())
    assert study(threshold=-0.05) == study(threshold=-0.05 + 0.0)
    assert study(num_networks=3) != study()
    assert study(observations_fn=lambda key, population: observations(key, population)) != study()
    with pytest.raises(ValueError, match="observations_fn"):
        study(observations_fn=None)  # the arm cannot record trajectories
    with pytest.raises(ValueError, match="num_networks"):
        study(num_networks=1)
    # the hyper reaches every network's ES: another sigma, another search
    one = study()
    init, step = jax.jit(one.init), jax.jit(one.step)  # hyper traced: one program for both
    runs = []
    for sigma in (0.05, 0.2):
        hyper = ESHyper(sigma_init=sigma)
        state, _ = step(jax.random.key(1), init(jax.random.key(0), hyper), hyper)
        runs.append(np.asarray(state.es.strategy.mean))
    assert runs[0].shape == runs[1].shape and not np.array_equal(runs[0], runs[1])
    with pytest.raises(ValueError, match="sigma_init"):
        one.init(jax.random.key(0), ESHyper(sigma_init=0.0))


@pytest.mark.slow
def test_cli_es_info_tiny_brax(tmp_path):
    import json

    from synprune_jax.cli import main

    out = tmp_path / "info"
    assert (
        main(
            [
                "run",
                "es-info",
                "--set",
                "task.episode_length=10",
                "--set",
                "task.hidden_sizes=4,4",
                "--set",
                "es.population_size=4",
                "--set",
                "study.num_networks=3",
                "--set",
                "study.threshold=5",
                "--set",
                "run.num_generations=2",
                "--set",
                "run.chunk_size=2",
                "--set",
                "run.progress=false",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary["table"]) == 3
    assert (out / "mi_vs_learning_speed.png").stat().st_size > 0
    assert "Spearman" in (out / "summary.md").read_text()
