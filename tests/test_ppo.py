"""PPO and the gradient-based pruning methods (synprune_jax.algorithms.ppo, sparse_training)."""

from __future__ import annotations

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from synprune_jax import masks as masks_lib
from synprune_jax import sparse_training
from synprune_jax.algorithms.ppo import (
    PPO,
    Normalizer,
    PPOConfig,
    PPOHyper,
    clipped_surrogate,
    compute_gae,
    fold_normalizer,
    validate_hyper,
)
from synprune_jax.networks import MLPSpec
from synprune_jax.tasks import ReachAvoidArm

SPEC = MLPSpec(input_size=11, hidden_sizes=(16, 16), output_size=3)
SIZES = np.array([176, 256, 48])

# ----- GAE and the clipped loss against values worked out by hand ----------------------------
# T = 3, one trajectory, discount 0.9, lambda 0.5, rewards 1, 2, 3, values 0.5, 1, 1.5, bootstrap 2
_REWARDS = jnp.array([[1.0], [2.0], [3.0]])
_VALUES = jnp.array([[0.5], [1.0], [1.5]])


@pytest.mark.parametrize(
    "termination, truncation, targets, advantages",
    [
        # deltas 1.4, 2.35, 3.3; A_2 = 3.3, A_1 = 2.35 + 0.45 * 3.3, A_0 = 1.4 + 0.45 * A_1
        ([0, 0, 0], [0, 0, 0], [3.62575, 4.835, 4.8], [4.8515, 5.32, 3.3]),
        # terminal at t = 1: no bootstrap there, and the recursion stops
        ([0, 1, 0], [0, 0, 0], [2.35, 2.0, 4.8], [2.3, 1.0, 3.3]),
        # truncated at t = 1: that step contributes nothing and cuts the recursion
        ([0, 0, 0], [0, 1, 0], [1.9, 1.0, 4.8], [1.4, 0.0, 3.3]),
    ],
)
def test_gae_matches_hand_computed_values(termination, truncation, targets, advantages):
    column = lambda values: jnp.asarray(values, jnp.float32)[:, None]  # noqa: E731
    got_targets, got_advantages = compute_gae(
        column(truncation),
        column(termination),
        _REWARDS,
        _VALUES,
        jnp.array([2.0]),
        lambda_=0.5,
        discount=0.9,
    )
    np.testing.assert_allclose(got_targets[:, 0], targets, rtol=1e-6)
    np.testing.assert_allclose(got_advantages[:, 0], advantages, rtol=1e-6, atol=1e-7)


def test_clipped_surrogate_matches_hand_computed_values():
    ratio = jnp.array([0.5, 1.0, 2.0, 1.5])
    advantages = jnp.array([1.0, 1.0, -1.0, 2.0])
    # min(r A, clip(r, 0.8, 1.2) A): 0.5, 1.0, -2.0, 2.4 -> loss -(1.9) / 4
    loss = clipped_surrogate(jnp.log(ratio), advantages, 0.2)
    np.testing.assert_allclose(float(loss), -1.9 / 4, rtol=1e-6)


def test_normalizer_matches_numpy_over_several_batches():
    data = np.random.default_rng(0).normal(3.0, 2.0, (5, 40, 4)).astype(np.float32)
    normalizer = Normalizer.create(4)
    for batch in data:
        normalizer = normalizer.update(jnp.asarray(batch))
    flat = data.reshape(-1, 4)
    np.testing.assert_allclose(normalizer.mean, flat.mean(0), rtol=1e-5)
    np.testing.assert_allclose(normalizer.std, flat.std(0), rtol=1e-4)
    assert float(normalizer.count) == 200


def test_folded_normaliser_gives_the_same_policy_on_raw_observations():
    @jax.jit  # one program, not op by op
    def both_forms():
        params = SPEC.init(jax.random.key(0))
        masks = masks_lib.init_masks(jax.random.key(1), params, SPEC.maskable(), 0.3, exact=True)
        params = masks_lib.apply_masks(params, masks)
        normalizer = Normalizer.create(11).update(
            jax.random.normal(jax.random.key(2), (64, 11)) * 3.0 + 1.0
        )
        raw = jax.random.normal(jax.random.key(3), (8, 11)) * 3.0 + 1.0
        folded = fold_normalizer(SPEC, params, normalizer)
        return (
            folded,
            masks,
            SPEC.apply(folded, masks, raw),
            SPEC.apply_dense(params, normalizer.apply(raw)),
        )

    folded, masks, on_raw, on_normalised = both_forms()
    np.testing.assert_allclose(on_raw, on_normalised, rtol=1e-4, atol=1e-5)
    # a pruned weight stays zero in the folded network
    kernel = np.asarray(SPEC.kernels(folded)[0])
    assert np.all(kernel[~np.asarray(SPEC.kernels(masks)[0])] == 0)


# ----- densities and mask updates -------------------------------------------------------------
@pytest.mark.parametrize("density", [0.01, 0.05, 0.1, 0.25, 0.5, 1.0])
def test_erk_densities_add_up_to_the_target(density):
    densities = np.asarray(sparse_training.erk_densities(SPEC, density), np.float64)
    assert np.all((densities > 0) & (densities <= 1))
    np.testing.assert_allclose((densities * SIZES).sum() / SIZES.sum(), density, rtol=1e-5)
    # smaller layers are denser ((n_in + n_out) / (n_in n_out) is larger)
    assert densities[2] >= densities[0] >= densities[1]


@pytest.mark.parametrize("distribution", ["uniform", "erk"])
def test_random_masks_have_exact_counts(distribution):
    params = SPEC.init(jax.random.key(0))
    counts = sparse_training.layer_counts(SPEC, 0.1, distribution)
    masks = sparse_training.random_masks(jax.random.key(1), SPEC, params, counts)
    assert [int(k.sum()) for k in SPEC.kernels(masks)] == counts.tolist()
    if distribution == "uniform":
        assert counts.tolist() == [18, 26, 5]  # round(0.1 * n_l)
    assert all(bool(b.all()) for b in SPEC.biases(masks))


def _algorithm(pruning: str, **config) -> PPO:
    task = ReachAvoidArm(num_joints=2, episode_length=10, num_episodes=2, hidden_sizes=(8, 8))
    settings = dict(
        num_envs=4,
        unroll_length=5,
        batch_size=4,
        num_minibatches=2,
        num_updates_per_batch=2,
        value_hidden_sizes=(8,),
        pruning=pruning,
        prune_start=2,
        prune_end=8,
        update_every=2,
        update_end=15,
    )
    settings.update(config)
    return PPO(PPOConfig(**settings), task)


def test_gmp_follows_the_cubic_schedule_exactly():
    algorithm = _algorithm("gmp")
    spec, hyper = algorithm.spec, PPOHyper(density=0.1)
    params = spec.init(jax.random.key(0))
    masks = spec.full_masks(params)
    prune = jax.jit(
        lambda iteration, params, masks: algorithm._prune(
            jax.random.key(0), iteration, (params, None, None), masks, None, None, hyper
        )
    )
    sizes = np.array(
        [a * b for a, b in zip(spec.layer_sizes[:-1], spec.layer_sizes[1:], strict=True)]
    )
    expected = sizes.copy()
    for iteration in range(1, 11):
        masks = prune(jnp.int32(iteration), params, masks)
        # start 2, end 8, every 2 iterations: prunes at 2, 4, 6, 8
        if iteration in (2, 4, 6, 8):
            progress = np.float32((iteration - 2) / 6)
            goal = np.float32(0.1) + np.float32(0.9) * (np.float32(1) - progress) ** 3
            expected = np.round(goal * sizes.astype(np.float32)).astype(int)
        assert [int(k.sum()) for k in spec.kernels(masks)] == expected.tolist(), iteration
    np.testing.assert_array_equal(expected, np.round(0.1 * sizes))


@pytest.mark.parametrize("method", ["set", "rigl"])
def test_set_and_rigl_keep_counts_while_changing_connections(method):
    algorithm = _algorithm(method)
    hyper = PPOHyper(density=0.3, drop_fraction=0.5)
    state = jax.jit(algorithm.init)(jax.random.key(0), hyper)
    spec = algorithm.spec
    counts = [int(k.sum()) for k in spec.kernels(state.masks)]
    assert counts == sparse_training.layer_counts(spec, 0.3, "uniform").tolist()
    step = jax.jit(algorithm.step)
    changed = False
    for generation in range(4):  # updates at iterations 2 and 4 (every 2, before 15)
        before, before_params = state.masks, state.params
        state, metrics = step(jax.random.key(generation), state, hyper)
        assert [int(k.sum()) for k in spec.kernels(state.masks)] == counts
        flipped = any(
            bool(jnp.any(a != b))
            for a, b in zip(spec.kernels(before), spec.kernels(state.masks), strict=True)
        )
        assert flipped == (generation + 1 in (2, 4)) or not flipped
        changed |= flipped
        # pruned weights are zero and stay zero: no update reaches them; active ones learn
        for old, new in zip(spec.kernels(before_params), spec.kernels(state.params), strict=True):
            assert bool(jnp.any(old != new))
        for kernel, mask in zip(spec.kernels(state.params), spec.kernels(state.masks), strict=True):
            assert bool(jnp.all(jnp.where(mask, 0.0, kernel) == 0.0))
        assert np.isfinite(float(metrics["eval_fitness"]))
    assert changed


def test_a_pruned_weight_gets_exactly_zero_gradient():
    """A value planted in a pruned weight cannot reach the loss: its gradient is exactly zero
    (the trainer also masks the optimiser's update and keeps pruned weights at zero: the SET /
    RigL test above checks them after every step)."""
    algorithm = _algorithm("static")
    spec, hyper = algorithm.spec, PPOHyper(density=0.25)
    state = jax.eval_shape(algorithm.init, jax.random.key(0), hyper)
    params = spec.init(jax.random.key(0))
    counts = sparse_training.layer_counts(spec, 0.25, "uniform")
    masks = sparse_training.random_masks(jax.random.key(1), spec, params, counts)
    planted = spec.replace_kernels(
        params,
        [
            jnp.where(m, k, 5.0)
            for k, m in zip(spec.kernels(params), spec.kernels(masks), strict=True)
        ],
    )
    value_params = algorithm.value_spec.init(jax.random.key(2))
    keys = iter(jax.random.split(jax.random.key(3), 8))
    batch_size, length, size = 4, 5, spec.input_size
    batch = {
        "observations": jax.random.normal(next(keys), (batch_size, length, size)),
        "raw_actions": jax.random.normal(next(keys), (batch_size, length, spec.output_size)),
        "log_probs": jax.random.normal(next(keys), (batch_size, length)),
        "values": jnp.zeros((batch_size, length)),
        "reward": jax.random.normal(next(keys), (batch_size, length)),
        "termination": jnp.zeros((batch_size, length)),
        "truncation": jnp.zeros((batch_size, length)),
        "last_observations": jax.random.normal(next(keys), (batch_size, size)),
    }
    normalizer = Normalizer.create(size)

    def loss(weights):
        trainable = (weights, jnp.ones(state.scale.shape), value_params)
        return algorithm.loss(trainable, masks, normalizer, batch, jax.random.key(4), hyper)[0]

    grads = jax.jit(jax.grad(loss))(planted)
    for gradient, mask in zip(spec.kernels(grads), spec.kernels(masks), strict=True):
        gradient, mask = np.asarray(gradient), np.asarray(mask)
        assert np.all(gradient[~mask] == 0.0) and np.any(gradient[mask] != 0.0)


def test_ppo_learns_the_reach_arm():
    """50k env steps (40 iterations) take the deterministic policy's return from about 0.2 to
    above 0.45 (seed 0, measured 0.55; 16 evaluation episodes)."""
    task = ReachAvoidArm(num_joints=2, episode_length=30, num_episodes=16, hidden_sizes=(16,))
    config = PPOConfig(
        num_envs=32, unroll_length=10, batch_size=32, num_minibatches=4, value_hidden_sizes=(32,)
    )
    algorithm = PPO(config, task)
    hyper = algorithm.default_hyper
    state = jax.jit(algorithm.init)(jax.random.key(0), hyper)
    step = jax.jit(algorithm.step)
    returns = []
    for generation in range(40):
        state, metrics = step(jax.random.fold_in(jax.random.key(1), generation), state, hyper)
        returns.append(float(metrics["eval_fitness"]))
    assert np.mean(returns[:3]) < 0.35
    assert np.mean(returns[-5:]) > 0.45, returns


def test_bad_settings_are_refused_with_one_line():
    with pytest.raises(ValueError, match="ppo.density must be in"):
        validate_hyper(PPOHyper(density=1.5))
    with pytest.raises(ValueError, match="must be a multiple of ppo.num_envs"):
        PPOConfig(num_envs=3, batch_size=4, num_minibatches=2)
    with pytest.raises(ValueError, match="unknown ppo.pruning"):
        PPOConfig(pruning="lottery")
    with pytest.raises(ValueError, match="prune_end"):
        PPOConfig(prune_start=80, prune_end=20)
    with pytest.raises(TypeError, match="environment task"):
        from synprune_jax.tasks import KinematicArm

        PPO(PPOConfig(), KinematicArm(num_joints=3, genotype="mlp"))
    assert dataclasses.replace(PPOConfig(), pruning="rigl").env_steps_per_iteration == 5120


def test_a_ppo_run_lists_exports_and_replays_its_policy(tmp_path, capsys):
    """The trained policy (normaliser folded in) is a network of the task's spec: inspect lists
    it, export writes it, replay repeats its recorded evaluation exactly."""
    from synprune_jax import cli
    from synprune_jax.export import open_run
    from synprune_jax.replays import replay

    out = tmp_path / "run"
    args = ["run", "ppo-prune", "--out", str(out)]
    for item in [
        "task.name=reach",
        "task.num_joints=2",
        "task.episode_length=10",
        "task.num_episodes=2",
        "task.hidden_sizes=[8]",
        "ppo.num_envs=4",
        "ppo.batch_size=4",
        "ppo.num_minibatches=2",
        "ppo.unroll_length=5",
        "ppo.value_hidden_sizes=[8]",
        "ppo.pruning=static",
        "ppo.density=0.5",
        "run.num_generations=3",
        "run.progress=false",
    ]:
        args += ["--set", item]
    assert cli.main(args) == 0
    assert "PPO, pruning static (uniform, target density 0.5)" in capsys.readouterr().out
    networks = open_run(out)
    assert networks.kind == "ppo" and len(networks) == 1
    assert networks.evaluated_at.tolist() == [3]
    result = replay(out, tmp_path / "replay", rank=0, networks=networks)
    assert result.exact is True, result.note
    assert result.fitness == float(networks.fitness[0])
    assert cli.main(["export", str(out), "--rank", "0", "--out", str(tmp_path / "export")]) == 0
    assert (tmp_path / "export").exists()


@pytest.mark.slow
def test_ppo_solves_brax_inverted_pendulum():
    """Brax inverted_pendulum (spring, 100-step episodes, 16-16 policy): the deterministic policy
    balances for the whole episode (return 100) within 20 iterations (102,400 env steps; seed 0
    reached it at iteration 10 when measured); the untrained policy falls within ~15 steps."""
    from conftest import optimized_compilation

    from synprune_jax.tasks import BraxTask

    task = BraxTask(
        env_name="inverted_pendulum", backend="spring", episode_length=100, hidden_sizes=(16, 16)
    )
    algorithm = PPO(PPOConfig(), task)
    hyper = algorithm.default_hyper
    with optimized_compilation():
        state = jax.jit(algorithm.init)(jax.random.key(0), hyper)
        step = jax.jit(algorithm.step)
        returns = []
        for generation in range(20):
            state, metrics = step(jax.random.fold_in(jax.random.key(1), generation), state, hyper)
            returns.append(float(metrics["eval_fitness"]))
    assert returns[0] < 50, returns
    assert max(returns[-5:]) == 100.0 and np.mean(returns[-5:]) > 90, returns


def test_env_states_holding_typed_keys_are_stored_as_key_data():
    """MuJoCo Playground keeps PRNG keys in its env states; PPO's state stores their raw data
    (no typed keys in a checkpoint) and wraps them back for the env."""
    from synprune_jax.algorithms.ppo import _key_data, _typed_keys

    tree = {"rng": jax.random.key(3), "x": jnp.ones(2), "keys": jax.random.split(jax.random.key(4))}
    stored = _key_data(tree)
    assert stored["rng"].dtype == jnp.uint32 and stored["keys"].shape == (2, 2)
    template = jax.eval_shape(lambda: tree)
    back = _typed_keys(stored, template)
    assert jax.random.key_data(back["rng"]).tolist() == jax.random.key_data(tree["rng"]).tolist()
    assert float(jax.random.uniform(back["keys"][1])) == float(jax.random.uniform(tree["keys"][1]))


@pytest.mark.slow
def test_ppo_on_playground_checkpoints_and_resumes_exactly(tmp_path):
    """A Playground task (typed keys and a zero-size ``act`` in its MJX state): a run cut after
    2 of 4 iterations and resumed writes the same metrics as the run done at once."""
    from synprune_jax import cli

    common = [
        "task.name=playground",
        "task.env_name=CartpoleBalance",
        "task.episode_length=20",
        "task.hidden_sizes=[4]",
        "ppo.num_envs=4",
        "ppo.batch_size=4",
        "ppo.num_minibatches=2",
        "ppo.unroll_length=5",
        "ppo.pruning=set",
        "ppo.density=0.5",
        "ppo.update_every=1",
        "run.chunk_size=2",
        "run.checkpoint_every=2",
        "run.progress=false",
    ]

    def run(out, generations):
        args = [
            "run",
            "ppo-prune",
            "--out",
            str(out),
            "--set",
            f"run.num_generations={generations}",
        ]
        for item in common:
            args += ["--set", item]
        assert cli.main(args) == 0

    run(tmp_path / "whole", 4)
    run(tmp_path / "cut", 2)
    config = json.loads((tmp_path / "cut" / "config.json").read_text())
    config["run"]["num_generations"] = 4
    (tmp_path / "cut" / "config.json").write_text(json.dumps(config))
    assert cli.main(["resume", str(tmp_path / "cut")]) == 0
    assert (tmp_path / "whole" / "metrics.csv").read_text() == (
        tmp_path / "cut" / "metrics.csv"
    ).read_text()
