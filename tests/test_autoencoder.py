"""Tests for activation-guided pruning of autoencoders (data, model, operators, schedules, loops)
and for the shared minibatch training function :func:`synprune_jax.training.fit`."""

import json
import math

import jax

jax.config.update("jax_numpy_rank_promotion", "raise")

import chex  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
import pytest  # noqa: E402

from synprune_jax.autoencoder import (  # noqa: E402
    AutoencoderSpec,
    BinaryClusteringSpec,
    CanonicalTraining,
    CoevolutionConfig,
    SpatialCoevolution,
    TrainingConfig,
    TrainingHyper,
    accumulate_stats,
    apply_keep,
    check_hyper,
    conjunctive_units,
    fresh_adam,
    init_autoencoder,
    init_stats,
    make_binary_clustering,
    prune_keep,
    prune_probability,
    random_keep,
    reconstruct,
    variance_keep_probability,
    variance_scores,
)
from synprune_jax.autoencoder.model import count_nonzero  # noqa: E402
from synprune_jax.autoencoder.pruning import random_keep_tensor, variance_keep  # noqa: E402
from synprune_jax.autoencoder.schedules import final_epoch  # noqa: E402
from synprune_jax.autoencoder.training import canonical_optimizer, train_epoch  # noqa: E402
from synprune_jax.config import ConfigError  # noqa: E402
from synprune_jax.training import fit  # noqa: E402

TINY = AutoencoderSpec(input_dim=40, hidden_dim=6, bottleneck_dim=3)
TINY_DATA = BinaryClusteringSpec(num_clusters=3, dim=40, num_train=20, num_test=10)


@pytest.fixture(scope="module")
def tiny_data():
    return make_binary_clustering(jax.random.key(0), TINY_DATA)


def _tiny_data():
    return make_binary_clustering(jax.random.key(0), TINY_DATA)


# ---------------------------------------------------------------------------------------------
# Data and model.


def test_binary_clustering_data():
    spec = BinaryClusteringSpec()
    generate = jax.jit(make_binary_clustering, static_argnums=1)
    data = generate(jax.random.key(1), spec)
    centroids, train = np.asarray(data["centroids"]), np.asarray(data["train"])
    assert centroids.shape == (10, 1000) and train.shape == (1000, 1000)
    assert data["test"].shape == (1000, 1000) and data["train"].dtype == jnp.float32
    assert set(np.unique(train)) <= {0.0, 1.0}
    # each centroid bit is 1 with probability 0.75: 10000 bits, 6 sigma ~ 0.026
    assert abs(centroids.mean() - 0.75) < 0.026
    # every sample is its centroid with exactly 5 % (50) bits flipped
    flips = np.abs(train - centroids[np.asarray(data["train_labels"])]).sum(axis=1)
    np.testing.assert_array_equal(flips, np.full(1000, 50.0))
    again = generate(jax.random.key(1), spec)
    np.testing.assert_array_equal(np.asarray(again["test"]), np.asarray(data["test"]))
    with pytest.raises(ValueError):
        BinaryClusteringSpec(flip_fraction=1.5)


def test_model_shapes_counts_and_recorded_activations():
    spec = AutoencoderSpec()
    assert spec.num_parameters("encoder") == 1000 * 30 + 30 + 30 * 10 + 10
    assert spec.num_parameters("decoder") == 10 * 30 + 30 + 30 * 1000 + 1000
    with pytest.raises(ValueError, match="'encoder' or 'decoder', got 'encodr'"):
        spec.num_parameters("encodr")
    params = init_autoencoder(jax.random.key(0), TINY)
    assert params["encoder"]["layer_0"]["kernel"].shape == (40, 6)
    assert params["decoder"]["layer_1"]["bias"].shape == (40,)
    bound = 1 / math.sqrt(40)
    assert float(jnp.max(jnp.abs(params["encoder"]["layer_0"]["kernel"]))) <= bound
    x = jnp.ones((4, 40))
    output, recorded = reconstruct(params, x, "post_relu")
    _, pre = reconstruct(params, x, "pre_activation")
    assert output.shape == (4, 40) and bool(jnp.all((output > 0) & (output < 1)))
    assert [a.shape for a in recorded["encoder"]] == [(4, 6), (4, 3)]
    assert [a.shape for a in recorded["decoder"]] == [(4, 6), (4, 40)]
    for post, linear in zip(
        recorded["encoder"] + recorded["decoder"][:1],
        pre["encoder"] + pre["decoder"][:1],
        strict=True,
    ):
        np.testing.assert_allclose(post, jnp.maximum(linear, 0.0))
    # the decoder's last layer is recorded before the sigmoid either way
    np.testing.assert_allclose(jax.nn.sigmoid(recorded["decoder"][1]), output, rtol=1e-6)
    np.testing.assert_array_equal(recorded["decoder"][1], pre["decoder"][1])


# ---------------------------------------------------------------------------------------------
# Schedules: every formula, exactly.


@pytest.mark.parametrize("t", [0, 1, 150, 299, 300, 399, 400])
def test_schedules_exact(t):
    p0, final, n = 0.5, 400, 3
    expected = {
        "none": 0.0,
        "fixed": p0,
        "increase": p0 * t / final,
        "decrease": 1 - p0 * t / final,
        "population": p0 * t / (final * n),
        "final_n": p0 if t >= 0.75 * final else 0.0,
        "exponential": p0 * (1 - math.exp(-2 * t / final)),
        "prune_after": p0 if t >= final else 0.0,
    }
    for name, value in expected.items():
        got = float(prune_probability(name, p0, t, final, n))
        assert got == pytest.approx(value, rel=1e-6, abs=1e-7), name


def test_schedule_traced_and_errors():
    values = jax.jit(jax.vmap(lambda t: prune_probability("final_n", 0.5, t, 8)))(jnp.arange(8))
    np.testing.assert_array_equal(values, [0, 0, 0, 0, 0, 0, 0.5, 0.5])
    assert final_epoch("canonical", 400) == 400 and final_epoch("coevolution", 400) == 399
    with pytest.raises(ValueError, match="unknown pruning schedule"):
        prune_probability("linear", 0.5, 1, 10)


# ---------------------------------------------------------------------------------------------
# Operators on hand-made activations.


def test_variance_scores_match_numpy_std():
    passes = np.random.default_rng(0).normal(size=(7, 3, 4)).astype(np.float32)  # [R, B, u]
    params = {
        "encoder": {"layer_0": {"bias": jnp.zeros(4)}, "layer_1": {"bias": jnp.zeros(2)}},
        "decoder": {"layer_0": {"bias": jnp.zeros(2)}, "layer_1": {"bias": jnp.zeros(2)}},
    }
    stats = init_stats(params, batch_size=3)
    for values in passes:
        stats = accumulate_stats(
            stats,
            {
                "encoder": (jnp.asarray(values), jnp.zeros((3, 2))),
                "decoder": (jnp.zeros((3, 2)), jnp.zeros((3, 2))),
            },
        )
    expected = np.std(passes, axis=0).sum(axis=0)
    np.testing.assert_allclose(variance_scores(stats["encoder"]["layer_0"]), expected, rtol=1e-5)
    np.testing.assert_array_equal(variance_scores(stats["encoder"]["layer_1"]), np.zeros(2))


def test_variance_keep_probability_and_masks():
    np.testing.assert_allclose(
        variance_keep_probability(jnp.array([1.0, 2.0, 3.0, 5.0])), [1.0, 0.75, 0.5, 0.0]
    )
    np.testing.assert_array_equal(variance_keep_probability(jnp.full(3, 2.0)), np.ones(3))
    layer = {"kernel": jnp.ones((50, 3)), "bias": jnp.ones(3)}
    keep = variance_keep(jax.random.key(0), layer, jnp.array([0.0, 1.0, 0.5]))
    kernel = np.asarray(keep["kernel"])
    # lowest variance: always kept; highest: always pruned; middle: about half
    assert kernel[:, 0].all() and not kernel[:, 1].any()
    assert 10 <= kernel[:, 2].sum() <= 40
    assert keep["bias"][0] == 1 and keep["bias"][1] == 0


def test_conjunctive_units_hand_made():
    activations = jnp.array(
        [
            [0.0, 0.05, 1.0, 0.02, 0.5],  # normalised < 0.1: units 0, 1, 3
            [0.0, 0.5, 1.0, 0.05, 0.0],  # units 0, 3, 4 -> intersection {0, 3}
            [1.0, 0.0, 0.5, 0.0, 0.0],  # units 1, 3, 4 -> {3}: stop (one left)
            [0.0, 1.0, 1.0, 1.0, 1.0],  # would leave {} but is never reached
        ]
    )
    np.testing.assert_array_equal(
        conjunctive_units(activations, 0.1), [False, False, False, True, False]
    )
    # an intersection can become empty; a constant case marks nothing
    np.testing.assert_array_equal(
        conjunctive_units(jnp.array([[0.0, 0.0, 1.0], [1.0, 1.0, 0.0]]), 0.1), [False] * 3
    )
    np.testing.assert_array_equal(
        conjunctive_units(jnp.array([[0.0, 0.0, 1.0], [2.0, 2.0, 2.0]]), 0.1), [False, False, False]
    )
    # first case marks a single unit: the filter stops at once and that unit is pruned
    np.testing.assert_array_equal(
        conjunctive_units(jnp.array([[0.0, 0.5, 1.0], [1.0, 0.0, 0.0]]), 0.1), [True, False, False]
    )


def test_conjunctive_keep_zeroes_surviving_units():
    params = init_autoencoder(jax.random.key(0), TINY)
    cases = jax.random.bernoulli(jax.random.key(2), 0.7, (30, 40)).astype(jnp.float32)
    keep = jax.jit(lambda k, p, c: prune_keep(k, "conjunctive", p, cases=c, threshold=0.1))(
        jax.random.key(1), params, cases
    )
    for network in ("encoder", "decoder"):
        for layer in ("layer_0", "layer_1"):
            kernel, bias = (
                np.asarray(keep[network][layer]["kernel"]),
                np.asarray(keep[network][layer]["bias"]),
            )
            # whole columns: a unit's incoming weights and bias go together
            np.testing.assert_array_equal(kernel, np.broadcast_to(bias, kernel.shape))


def test_random_keep_exact_counts():
    for shape, zeros in (((10,), 1), ((30,), 3), ((1000, 30), 3000), ((7,), 1), ((15,), 2)):
        keep = np.asarray(
            jax.jit(random_keep_tensor, static_argnums=1)(jax.random.key(3), shape, 0.1)
        )
        assert keep.shape == shape and int((keep == 0).sum()) == zeros, shape
    params = init_autoencoder(jax.random.key(0), AutoencoderSpec())
    keep = jax.jit(random_keep)(jax.random.key(1), params, 0.1)
    assert int(count_nonzero(keep)) == 61670 - (3000 + 3 + 30 + 1) - (30 + 3 + 3000 + 100)


def _ranks_below(values, count):
    return np.argsort(np.argsort(values, kind="stable"), kind="stable") < count


def test_random_keep_equals_the_double_argsort_it_replaces():
    # Same key, same zeros as `argsort(argsort(uniform)) >= count` (so seeded runs are unchanged)
    for shape, amount in (((1000, 30), 0.1), ((30,), 0.1), ((30, 1000), 0.5), ((10,), 0.0)):
        key = jax.random.key(7)
        size = int(np.prod(shape))
        count = int(np.round(np.float32(amount) * size))
        draws = np.asarray(jax.random.uniform(key, (size,)))
        expected = (~_ranks_below(draws, count)).astype(np.float32).reshape(shape)
        np.testing.assert_array_equal(np.asarray(random_keep_tensor(key, shape, amount)), expected)


def test_apply_keep_modes():
    params = {"w": jnp.arange(1.0, 5.0)}
    masks = {"w": jnp.ones(4)}
    keep = {"w": jnp.array([1.0, 0.0, 1.0, 0.0])}
    pruned, same_masks = apply_keep(params, masks, keep, persistent=False, do_prune=True)
    np.testing.assert_array_equal(pruned["w"], [1, 0, 3, 0])
    np.testing.assert_array_equal(same_masks["w"], np.ones(4))
    _, new_masks = apply_keep(params, masks, keep, persistent=True, do_prune=True)
    np.testing.assert_array_equal(new_masks["w"], keep["w"])
    untouched, kept_masks = apply_keep(params, masks, keep, persistent=True, do_prune=False)
    np.testing.assert_array_equal(untouched["w"], params["w"])
    np.testing.assert_array_equal(kept_masks["w"], np.ones(4))


# ---------------------------------------------------------------------------------------------
# The shared minibatch training function (synprune_jax.training.fit).


def _epoch_orders(key, num_epochs, num_examples):
    """The documented batch order: epoch e permutes with jax.random.split(key, E)[e]."""
    return [
        np.asarray(jax.random.permutation(k, num_examples))
        for k in jax.random.split(key, num_epochs)
    ]


def test_fit_sgd_on_a_linear_loss_is_exact():
    # loss = sum(w * batch): each step subtracts lr * (sum of its batch) from w, so an epoch
    # subtracts the sum of every example but the one left out of the last, partial minibatch
    data = jnp.arange(1.0, 6.0)  # 5 examples, batches of 2: one example dropped per epoch
    key = jax.random.key(3)
    result = jax.jit(
        lambda k: fit(
            k,
            jnp.float32(0.0),
            data,
            lambda w, x: jnp.sum(w * x),
            optax.sgd(1.0),
            batch_size=2,
            num_epochs=3,
        )
    )(key)
    dropped = sum(float(data[order[-1]]) for order in _epoch_orders(key, 3, 5))
    assert float(result.params) == -(3 * 15.0 - dropped)
    # the loss of every step is recorded before its update: [epochs, minibatches]
    assert result.losses.shape == (3, 2) and float(result.losses[0, 0]) == 0.0
    assert int(result.epochs_run) == 3 and float(result.best_validation_loss) == np.inf
    assert bool(jnp.all(jnp.isnan(result.validation_losses)))


def test_fit_batches_follow_the_epoch_permutations():
    """Each step sees data[permutation[i B:(i + 1) B]] in order; a pytree of data is indexed
    alike; [E] epoch keys are used as they are."""
    features = jnp.arange(7.0) * 10.0
    labels = jnp.arange(7)

    def loss_fn(w, batch):
        x, y = batch
        return jnp.sum(w * x), y  # aux: the batch's labels

    def record(seen, labels_of_batch):
        step, rows = seen
        return step + 1, rows.at[step].set(labels_of_batch)

    key = jax.random.key(5)
    result = fit(
        key,
        jnp.float32(0.0),
        (features, labels),
        loss_fn,
        optax.sgd(0.0),
        batch_size=3,
        num_epochs=2,
        has_aux=True,
        accumulate=record,
        accumulator=(jnp.int32(0), jnp.zeros((4, 3), jnp.int32)),
    )
    expected = np.concatenate([order[:6].reshape(2, 3) for order in _epoch_orders(key, 2, 7)])
    np.testing.assert_array_equal(result.accumulator[1], expected)
    # [E] epoch keys: the same epochs
    again = fit(
        jax.random.split(key, 2),
        jnp.float32(0.0),
        (features, labels),
        loss_fn,
        optax.sgd(0.0),
        batch_size=3,
        has_aux=True,
        accumulate=record,
        accumulator=(jnp.int32(0), jnp.zeros((4, 3), jnp.int32)),
    )
    np.testing.assert_array_equal(again.accumulator[1], expected)
    # loss values are those of the batches: sum(0 * x) = 0
    np.testing.assert_array_equal(result.losses, np.zeros((2, 2)))


def test_fit_early_stopping_keeps_the_best_epoch():
    # w rises by exactly 1 per step (SGD on loss -w), 2 steps per epoch: w = 2, 4, 6, 8, 10, ...
    # after the epochs; validation (w - 6)^2 = 16, 4, 0, 4, 16: best after epoch 3 (index 2),
    # then 2 epochs without improvement stop the run (patience 2)
    result = jax.jit(
        lambda k: fit(
            k,
            jnp.float32(0.0),
            jnp.ones(4),
            lambda w, x: -w * jnp.mean(x),
            optax.sgd(1.0),
            batch_size=2,
            num_epochs=8,
            validation_loss_fn=lambda w: (w - 6.0) ** 2,
            patience=2,
        )
    )(jax.random.key(0))
    assert float(result.params) == 6.0  # the best epoch's parameters
    assert int(result.epochs_run) == 5 and float(result.best_validation_loss) == 0.0
    np.testing.assert_array_equal(result.validation_losses, [16, 4, 0, 4, 16, 16, 16, 16])
    assert bool(jnp.all(jnp.isnan(result.losses[5:]))) and float(result.losses[4, 1]) == -9.0
    # without patience every epoch runs and the best is still returned
    unstopped = fit(
        jax.random.key(0),
        jnp.float32(0.0),
        jnp.ones(4),
        lambda w, x: -w * jnp.mean(x),
        optax.sgd(1.0),
        batch_size=2,
        num_epochs=8,
        validation_loss_fn=lambda w: (w - 6.0) ** 2,
    )
    assert float(unstopped.params) == 6.0 and int(unstopped.epochs_run) == 8
    assert float(unstopped.validation_losses[-1]) == 100.0
    # under vmap (a population) stopped members freeze while others go on
    targets = jnp.array([2.0, 6.0, 100.0])
    batched = jax.vmap(
        lambda target: fit(
            jax.random.key(0),
            jnp.float32(0.0),
            jnp.ones(4),
            lambda w, x: -w * jnp.mean(x),
            optax.sgd(1.0),
            batch_size=2,
            num_epochs=8,
            validation_loss_fn=lambda w: (w - target) ** 2,
            patience=2,
        )
    )(targets)
    np.testing.assert_array_equal(batched.params, [2.0, 6.0, 16.0])
    np.testing.assert_array_equal(batched.epochs_run, [3, 5, 8])


def test_fit_continues_from_an_optimizer_state():
    """Two one-epoch calls that pass the optimizer state on equal one two-epoch call."""
    data = jax.random.normal(jax.random.key(1), (12, 3))
    loss_fn = lambda w, x: jnp.mean((x - w[None, :]) ** 2)  # noqa: E731
    keys = jax.random.split(jax.random.key(2), 2)
    optimizer = optax.adam(0.1)
    whole = fit(keys, jnp.zeros(3), data, loss_fn, optimizer, batch_size=4)
    first = fit(keys[:1], jnp.zeros(3), data, loss_fn, optimizer, batch_size=4)
    second = fit(
        keys[1:], first.params, data, loss_fn, optimizer, batch_size=4, opt_state=first.opt_state
    )
    chex.assert_trees_all_close(second.params, whole.params, rtol=1e-6)
    assert int(second.opt_state[0].count) == 6
    np.testing.assert_allclose(
        np.concatenate([first.losses, second.losses]), whole.losses, rtol=1e-6
    )


def test_fit_zero_masked_gradients_and_argument_errors():
    mask = jnp.array([1.0, 0.0, 1.0])
    loss_fn = lambda w, x: jnp.sum(((w * mask)[None, :] - x) ** 2)  # noqa: E731
    result = fit(
        jax.random.key(0),
        jnp.full(3, 0.5),
        jnp.ones((4, 3)),
        loss_fn,
        optax.adam(0.1),
        batch_size=2,
        num_epochs=2,
    )
    assert float(result.params[1]) == 0.5  # no gradient, fresh Adam: unchanged
    assert float(result.params[0]) != 0.5
    with pytest.raises(ValueError, match="batch_size"):
        fit(
            jax.random.key(0),
            jnp.zeros(3),
            jnp.ones((4, 3)),
            loss_fn,
            optax.sgd(0.1),
            batch_size=5,
            num_epochs=1,
        )
    with pytest.raises(ValueError, match="leading axis"):
        fit(
            jax.random.key(0),
            jnp.zeros(3),
            (jnp.ones((4, 3)), jnp.ones(5)),
            loss_fn,
            optax.sgd(0.1),
            batch_size=2,
            num_epochs=1,
        )
    with pytest.raises(ValueError, match="num_epochs"):
        fit(
            jax.random.key(0), jnp.zeros(3), jnp.ones((4, 3)), loss_fn, optax.sgd(0.1), batch_size=2
        )
    with pytest.raises(ValueError, match="has_aux"):
        fit(
            jax.random.key(0),
            jnp.zeros(3),
            jnp.ones((4, 3)),
            loss_fn,
            optax.sgd(0.1),
            batch_size=2,
            num_epochs=1,
            accumulate=lambda a, b: a,
        )
    with pytest.raises(ValueError, match="patience"):
        fit(
            jax.random.key(0),
            jnp.zeros(3),
            jnp.ones((4, 3)),
            loss_fn,
            optax.sgd(0.1),
            batch_size=2,
            num_epochs=1,
            patience=2,
        )
    with pytest.raises(TypeError, match="typed PRNG key"):
        fit(
            jax.random.PRNGKey(0),
            jnp.zeros(3),
            jnp.ones((4, 3)),
            loss_fn,
            optax.sgd(0.1),
            batch_size=2,
            num_epochs=1,
        )


# ---------------------------------------------------------------------------------------------
# Optimisers and training passes of the autoencoder loops.


def test_fresh_adam_is_the_first_step_of_optax_adam():
    """The coevolution restarts Adam every step; its closed form equals optax.adam's first
    update from a fresh state (betas of the canonical loop and optax's defaults)."""
    params = init_autoencoder(jax.random.key(0), TINY)
    from synprune_jax.autoencoder import l1_loss

    betas = ((0.5, 0.999), (0.9, 0.999))

    @jax.jit  # one program per seed's data, not op by op
    def updates(x):
        grads = jax.grad(l1_loss)(params, x)
        fresh, state = fresh_adam(1e-3).update(grads, fresh_adam(1e-3).init(params))
        references = []
        for b1, b2 in betas:
            adam = optax.adam(1e-3, b1=b1, b2=b2, eps=1e-8)
            references.append(adam.update(grads, adam.init(params))[0])
        return fresh, state, references

    for seed in range(3):
        x = jax.random.bernoulli(jax.random.key(seed + 1), 0.7, (5, 40)).astype(jnp.float32)
        fresh, state, references = updates(x)
        assert state == optax.EmptyState()
        for reference in references:
            chex.assert_trees_all_close(fresh, reference, rtol=1e-5, atol=1e-9)


def _reference_epoch(key, params, masks, opt_state, learning_rate, train, config, fresh):
    """The training pass as written before it used fit: the permuted data cut into batches,
    value_and_grad, Adam (optax, or its first step in closed form), p + u, then the mask."""
    order = jax.random.permutation(key, train.shape[0])
    batches = train[order].reshape(-1, config.batch_size, train.shape[1])
    optimizer = canonical_optimizer(config, learning_rate)
    stats = init_stats(params, config.batch_size)

    def body(carry, batch):
        params, opt_state, stats = carry

        def loss_fn(p):
            output, recorded = reconstruct(p, batch, config.activation_point)
            return jnp.mean(jnp.abs(output - batch)), recorded

        (loss, recorded), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        stats = accumulate_stats(stats, recorded)
        if fresh:
            updates = jax.tree_util.tree_map(
                lambda g: -learning_rate * g / (jnp.abs(g) + 1e-8), grads
            )
        else:
            updates, opt_state = optimizer.update(grads, opt_state, params)
        params = jax.tree_util.tree_map(lambda p, u: p + u, params, updates)
        if config.persistent:
            params = jax.tree_util.tree_map(lambda p, m: p * m, params, masks)
        return (params, opt_state, stats), loss

    (params, opt_state, stats), losses = jax.lax.scan(body, (params, opt_state, stats), batches)
    return params, stats, jnp.mean(losses)


@pytest.mark.parametrize("fresh", [True, False])
@pytest.mark.parametrize("persistent", [True, False])
def test_train_epoch_equals_the_plain_loop(tiny_data, persistent, fresh):
    """train_epoch (fit with masks in the loss) gives the numbers of the plain loop that projects
    the parameters onto the mask after every update: the same batches in the same order and the
    same updates (equal up to XLA fusing the two programs differently: a few float32 ulps)."""
    config = TrainingConfig(
        spec=TINY, num_epochs=2, batch_size=5, persistent=persistent, operator="variance"
    )
    train = tiny_data["train"]
    params = init_autoencoder(jax.random.key(0), TINY)
    masks = jax.tree_util.tree_map(jnp.ones_like, params)
    optimizer = canonical_optimizer(config, 1e-2)
    opt_state = optimizer.init(params)
    if not fresh:  # momentum from an unpruned epoch first, as in the canonical loop
        params, opt_state, _, _ = train_epoch(
            jax.random.key(1), params, masks, optimizer, opt_state, train, config
        )
    keep = random_keep(jax.random.key(2), params, 0.5)
    params, masks = apply_keep(params, masks, keep, persistent, True)

    @jax.jit
    def both(params, masks, opt_state):
        chosen = fresh_adam(1e-2) if fresh else optimizer
        got = train_epoch(
            jax.random.key(3), params, masks, chosen, None if fresh else opt_state, train, config
        )
        return got, _reference_epoch(
            jax.random.key(3), params, masks, opt_state, 1e-2, train, config, fresh
        )

    (trained, _, stats, loss), (expected, expected_stats, expected_loss) = both(
        params, masks, opt_state
    )
    chex.assert_trees_all_close(trained, expected, rtol=1e-6, atol=1e-9)
    chex.assert_trees_all_close(stats, expected_stats, rtol=1e-6, atol=1e-9)
    assert float(loss) == pytest.approx(float(expected_loss), rel=1e-6)
    zero_after = [
        np.asarray(t)[np.asarray(k) == 0]
        for t, k in zip(
            jax.tree_util.tree_leaves(trained), jax.tree_util.tree_leaves(keep), strict=True
        )
    ]
    regrown = sum(int((values != 0).sum()) for values in zero_after)
    if persistent:  # pruned weights stay zero even with Adam momentum from before the prune
        assert regrown == 0
    else:
        assert regrown > 0


# ---------------------------------------------------------------------------------------------
# Loops (tiny sizes; one compile each, shared by the module).


CANONICAL_HYPER = TrainingHyper(learning_rate=1e-2, prune_probability=1.0)


@pytest.fixture(scope="module")
def canonical_run(tiny_data):
    config = TrainingConfig(
        spec=TINY,
        num_epochs=8,
        num_trials=3,
        batch_size=5,
        operator="variance",
        schedule="fixed",
        eval_every=1,
    )
    algorithm = CanonicalTraining(config, tiny_data["train"], tiny_data["test"])
    step = jax.jit(chex.assert_max_traces(algorithm.step, n=1))
    state = jax.jit(algorithm.init)(jax.random.key(0), CANONICAL_HYPER)
    history = []
    for epoch in range(3):
        state, metrics = step(jax.random.fold_in(jax.random.key(1), epoch), state, CANONICAL_HYPER)
        state = state.replace(generation=state.generation + 1)
        history.append(metrics)
    return algorithm, state, history


def test_canonical_prunes_and_records(canonical_run):
    algorithm, state, history = canonical_run
    assert [
        float(algorithm.learning_rate(t, CANONICAL_HYPER)) for t in (0, 1, 2, 4, 6)
    ] == pytest.approx([1e-2, 1e-2, 1e-3, 1e-4, 1e-5])
    # optax.adam's state is carried across epochs: 3 epochs x 4 steps per trial
    np.testing.assert_array_equal(state.opt_state[0].count, [12, 12, 12])
    np.testing.assert_array_equal(state.num_prunes, [3, 3, 3])  # p = 1 every epoch
    assert all(float(m["prune_rate"]) == 1.0 for m in history)
    total = TINY.num_parameters("encoder") + TINY.num_parameters("decoder")
    kept = np.asarray(state.kept_encoder + state.kept_decoder)
    # non-persistent: the metric counts nonzero weights right after this epoch's prune
    np.testing.assert_array_equal(kept, np.asarray(state.kept_at_prune))
    assert (kept < total).all()
    assert float(history[-1]["kept_fraction"]) == pytest.approx(kept.mean() / total, rel=1e-6)
    # trials are independent
    assert len(set(np.asarray(state.l1_train).tolist())) == 3


def test_canonical_config_errors(tiny_data):
    with pytest.raises(ValueError, match="divide"):
        CanonicalTraining(
            TrainingConfig(spec=TINY, batch_size=3), tiny_data["train"], tiny_data["test"]
        )
    with pytest.raises(ValueError, match=r"train data must be \[N, 40\]"):
        CanonicalTraining(TrainingConfig(spec=TINY), tiny_data["train"][:, :30], tiny_data["test"])
    with pytest.raises(ValueError, match="unknown pruning operator"):
        TrainingConfig(operator="magnitude")
    with pytest.raises(ValueError, match="prune_probability"):
        check_hyper(TrainingHyper(prune_probability=2.0))
    with pytest.raises(ValueError, match="lr_min"):
        check_hyper(TrainingHyper(lr_min=1.0, lr_max=0.5))
    check_hyper(TrainingHyper())  # the defaults are valid
    with pytest.raises(ValueError, match="order"):
        CoevolutionConfig(order="random")


def test_loops_compare_by_config_and_data(tiny_data):
    """Static structure only: equal configs and identical data make equal, equally hashed loops
    (one compiled program in a sweep); the hyper-parameters are not part of the object."""
    config = TrainingConfig(spec=TINY, num_epochs=3, operator="random", schedule="fixed")
    train, test = tiny_data["train"], tiny_data["test"]
    one = CanonicalTraining(config, train, test)
    copy = CanonicalTraining(
        TrainingConfig(spec=TINY, num_epochs=3, operator="random", schedule="fixed"),
        np.array(train),
        np.array(test),
    )
    assert one == copy and hash(one) == hash(copy) and len({one, copy}) == 1
    assert one != CanonicalTraining(config, 1.0 - train, test)
    assert one != CanonicalTraining(
        TrainingConfig(spec=TINY, num_epochs=4, operator="random", schedule="fixed"), train, test
    )
    ring = CoevolutionConfig(spec=TINY, num_epochs=3, num_cells=4)
    assert SpatialCoevolution(ring, train, test) == SpatialCoevolution(ring, train, test)
    assert SpatialCoevolution(ring, train, test) != CanonicalTraining(config, train, test)
    assert one.default_hyper == TrainingHyper()


COEVOLUTION_HYPER = TrainingHyper(learning_rate=1e-2, prune_probability=0.5)


@pytest.fixture(scope="module")
def coevolution(tiny_data):
    config = CoevolutionConfig(
        spec=TINY,
        num_epochs=4,
        num_trials=2,
        batch_size=5,
        operator="random",
        schedule="fixed",
        num_cells=4,
        radius=1,
        order="sequential",
    )
    return SpatialCoevolution(config, tiny_data["train"], tiny_data["test"])


def _neighbours(**kwargs):
    data = _tiny_data()
    return SpatialCoevolution(CoevolutionConfig(spec=TINY, **kwargs), data["train"], data["test"])


def test_neighbourhoods():
    ring = _neighbours(num_cells=5, radius=2)
    np.testing.assert_array_equal(ring.neighbours(0), [0, 1, 4, 2, 3])
    np.testing.assert_array_equal(ring.neighbours(4), [4, 0, 3, 1, 2])
    assert ring.config.neighbourhood_size == 5
    np.testing.assert_array_equal(_neighbours(num_cells=10).neighbour_table[9], [9, 0, 8])
    # torus 3 x 4, von Neumann radius 1: itself, N, W, E, S (row-major index row * 4 + col)
    torus = _neighbours(num_cells=12, topology="torus", grid_shape=(3, 4))
    assert torus.config.neighbourhood_size == 5
    np.testing.assert_array_equal(torus.neighbours(0), [0, 8, 3, 1, 4])  # corner: wraps both
    np.testing.assert_array_equal(torus.neighbours(11), [11, 7, 10, 8, 3])  # opposite corner
    np.testing.assert_array_equal(torus.neighbours(5), [5, 1, 4, 6, 9])  # interior
    # Moore radius 1 on 3 x 3: every cell, itself first, then by (d_row, d_col)
    moore = _neighbours(num_cells=9, topology="torus", grid_shape=[3, 3], neighbourhood="moore")
    assert moore.config.grid_shape == (3, 3) and moore.config.neighbourhood_size == 9
    np.testing.assert_array_equal(moore.neighbours(0), [0, 8, 6, 7, 2, 1, 5, 3, 4])
    np.testing.assert_array_equal(moore.neighbours(8), [8, 4, 5, 3, 7, 6, 1, 2, 0])
    # small grids: offsets that wrap onto the same cell count once
    default = _neighbours(num_cells=10, topology="torus")  # 2 x 5: N and S coincide
    assert default.config.grid_shape == (2, 5) and default.config.neighbourhood_size == 4
    np.testing.assert_array_equal(default.neighbours(0), [0, 5, 4, 1])
    np.testing.assert_array_equal(default.neighbours(9), [9, 4, 8, 5])
    small = _neighbours(
        num_cells=4, topology="torus", grid_shape=(2, 2), neighbourhood="moore", radius=2
    )
    assert small.config.neighbourhood_size == 4
    np.testing.assert_array_equal(small.neighbours(3), [3, 0, 1, 2])
    line = _neighbours(num_cells=4, topology="torus", grid_shape=(1, 4))  # 1 row: a ring
    np.testing.assert_array_equal(line.neighbours(0), [0, 3, 1])
    for algorithm in (ring, torus, moore, default, small, line):
        table = np.asarray(algorithm.neighbour_table)
        assert all(len(set(row)) == len(row) for row in table.tolist())
        # symmetric: b is a neighbour of a iff a is a neighbour of b
        pairs = {(a, b) for a, row in enumerate(table.tolist()) for b in row}
        assert pairs == {(b, a) for a, b in pairs}


def test_topology_config_errors():
    with pytest.raises(ValueError, match="has 9 cells but num_cells is 10"):
        CoevolutionConfig(topology="torus", grid_shape=(3, 3))
    with pytest.raises(ValueError, match="grid_shape must be"):
        CoevolutionConfig(num_cells=4, topology="torus", grid_shape=(4,))
    with pytest.raises(ValueError, match="grid_shape must be"):
        CoevolutionConfig(num_cells=4, topology="torus", grid_shape=(0, 4))
    with pytest.raises(ValueError, match="topology=torus only"):
        CoevolutionConfig(grid_shape=(2, 5))
    with pytest.raises(ValueError, match="topology"):
        CoevolutionConfig(topology="hex")
    with pytest.raises(ValueError, match="neighbourhood"):
        CoevolutionConfig(topology="torus", neighbourhood="hexagonal")
    with pytest.raises(ValueError, match="too large"):
        CoevolutionConfig(num_cells=4, radius=2)
    # a torus has no such limit: wrapped neighbours are deduplicated
    assert CoevolutionConfig(num_cells=4, radius=5, topology="torus").neighbourhood_size == 4


@pytest.mark.parametrize("text", ["2x3", "2,3", "[2,3]"])
def test_build_parses_grid_shape(text):
    from synprune_jax import config as config_lib
    from synprune_jax.experiments import get_experiment

    experiment = get_experiment("ae-coevolution")
    config = config_lib.apply_overrides(
        experiment.default_config(),
        [
            "data.dim=40",
            "data.num_train=20",
            "data.num_test=10",
            "model.hidden_dim=6",
            "coevolution.num_cells=6",
            "coevolution.topology=torus",
            f"coevolution.grid_shape={text}",
            "coevolution.neighbourhood=moore",
        ],
    )
    algorithm = experiment.build(config).algorithm
    assert algorithm.config.grid_shape == (2, 3) and algorithm.config.neighbourhood_size == 6
    np.testing.assert_array_equal(algorithm.neighbours(0), [0, 5, 3, 4, 2, 1])
    with pytest.raises(ConfigError, match="grid_shape"):
        config["coevolution"]["grid_shape"] = "2xthree"
        experiment.build(config)


def _python_loop(algorithm, key, params, masks, rates, kept, epoch, hyper, synchronous):
    """Reference: the same cell function stepped cell by cell in Python."""
    config = algorithm.config
    order_key, cells_key = jax.random.split(key)
    cells = jnp.arange(config.num_cells, dtype=jnp.int32)
    order = cells if synchronous else jax.random.permutation(order_key, cells)
    snapshot = (params, masks, rates, kept)
    cell_epoch = jax.jit(algorithm.cell_epoch)
    for cell in np.asarray(order):
        source = snapshot if synchronous else (params, masks, rates, kept)
        new, new_mask, rate, new_kept, _, _ = cell_epoch(
            jax.random.fold_in(cells_key, int(cell)), jnp.int32(cell), *source, epoch, hyper
        )
        params = jax.tree_util.tree_map(lambda a, b, cell=cell: a.at[cell].set(b), params, new)
        masks = jax.tree_util.tree_map(lambda a, b, cell=cell: a.at[cell].set(b), masks, new_mask)
        rates, kept = rates.at[cell].set(rate), kept.at[cell].set(new_kept)
    return params, rates


@pytest.mark.parametrize(
    "order, topology",
    [
        ("sequential", "ring"),
        pytest.param("sequential", "torus", marks=pytest.mark.slow),  # 5 s cold; the rest cover it
        ("synchronous", "ring"),
        ("synchronous", "torus"),
    ],
)
def test_ring_epoch_equals_python_loop(coevolution, order, topology):
    import dataclasses

    grid = {"topology": "torus", "grid_shape": (2, 2)} if topology == "torus" else {}
    algorithm = SpatialCoevolution(
        dataclasses.replace(coevolution.config, order=order, **grid),
        coevolution.train,
        coevolution.test,
    )
    params = algorithm.init_trial(jax.random.key(0))
    masks = jax.tree_util.tree_map(jnp.ones_like, params)
    rates = jnp.full((4,), 1e-2)
    kept = jnp.full((4,), 100, jnp.int32)
    key, epoch = jax.random.key(5), jnp.int32(1)
    got = jax.jit(algorithm.ring_epoch)(key, params, masks, rates, kept, epoch, COEVOLUTION_HYPER)
    expected_params, expected_rates = _python_loop(
        algorithm, key, params, masks, rates, kept, epoch, COEVOLUTION_HYPER, order == "synchronous"
    )
    chex.assert_trees_all_close(got[0], expected_params, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(got[2], expected_rates, rtol=1e-6)
    assert bool(jnp.all(got[2] >= 1e-9))


@pytest.mark.parametrize(
    "order", [pytest.param("sequential", marks=pytest.mark.slow), "synchronous"]
)
def test_torus_run_is_deterministic_and_finite(tiny_data, order):
    config = CoevolutionConfig(
        spec=TINY,
        num_epochs=2,
        num_trials=2,
        batch_size=5,
        operator="random",
        schedule="population",
        num_cells=6,
        topology="torus",
        grid_shape=(2, 3),
        neighbourhood="moore",
        order=order,
    )
    assert config.neighbourhood_size == 6  # 2 rows: d_row = -1 and +1 coincide
    algorithm = SpatialCoevolution(config, tiny_data["train"], tiny_data["test"])
    hyper = TrainingHyper(learning_rate=1e-2, prune_probability=1.0)
    init, step = jax.jit(algorithm.init), jax.jit(algorithm.step)

    def run():
        state = init(jax.random.key(3), hyper)
        history = []
        for epoch in range(2):
            state, metrics = step(jax.random.fold_in(jax.random.key(4), epoch), state, hyper)
            history.append({name: float(value) for name, value in metrics.items()})
        return state, history

    state, first = run()
    _, second = run()
    assert first == second
    assert all(math.isfinite(v) for row in first for v in row.values())
    assert state.l1_train.shape == (2, 6) and state.learning_rate.shape == (2, 6)
    # population schedule: p = p0 t / (T n) = 1 / 6 in the last epoch (T = 1), 0 in the first
    assert first[0]["prune_rate"] == 0.0


def test_coevolution_step_metrics(coevolution):
    state = jax.jit(coevolution.init)(jax.random.key(0), COEVOLUTION_HYPER)
    assert state.l1_train.shape == (2, 4) and state.learning_rate.shape == (2, 4)
    np.testing.assert_array_equal(state.learning_rate, np.full((2, 4), np.float32(1e-2)))
    state, metrics = jax.jit(coevolution.step)(jax.random.key(1), state, COEVOLUTION_HYPER)
    assert int(state.num_prunes.sum()) > 0
    best = np.argmin(np.asarray(state.l1_test), axis=1)
    expected = np.asarray(state.l1_train)[np.arange(2), best].mean()
    assert float(metrics["l1_train"]) == pytest.approx(expected, rel=1e-6)
    assert float(metrics["l1_train_cells_mean"]) == pytest.approx(
        float(np.asarray(state.l1_train).mean()), rel=1e-6
    )
    assert 0 < float(metrics["kept_fraction"]) <= 1


# ---------------------------------------------------------------------------------------------
# Sweeps: traced hyper-parameters share one compiled program.

SWEEP_TINY = [
    "data.dim=40",
    "data.num_train=20",
    "data.num_test=10",
    "data.num_clusters=3",
    "model.hidden_dim=6",
    "model.bottleneck_dim=3",
    "training.num_trials=2",
    "coevolution.num_cells=4",
    "operator=random",
    "schedule=fixed",
    "run.num_generations=3",
    "run.chunk_size=3",
    "run.checkpoint_every=3",
    "run.progress=false",
]


def test_sweep_groups_traced_and_static_keys():
    from synprune_jax import config as config_lib
    from synprune_jax import sweeps
    from synprune_jax.experiments import get_experiment

    # the builder puts the traced keys in the hyper (the contract test checks the sweep's runs)
    experiment = get_experiment("ae-prune")
    built = experiment.build(
        config_lib.apply_overrides(
            experiment.default_config(), SWEEP_TINY + ["training.learning_rate=0.001"]
        )
    )
    assert built.hyper.learning_rate == 1e-3 and built.hyper.prune_probability == 0.5

    traced = {
        "training.learning_rate": [1e-2, 1e-3],
        "pruning.probability": [0.2, 0.5],
        "pruning.amount": [0.1, 0.3],
        "pruning.threshold": [0.1, 0.2],
        "coevolution.lr_mutation_std": [1e-5, 1e-4],
        "coevolution.lr_min": [1e-9, 1e-8],
        "coevolution.lr_max": [1.0, 10.0],
    }
    for key, values in traced.items():
        assert len(sweeps.plan_groups("ae-coevolution", (0, 1), {key: values}, SWEEP_TINY)) == 1, (
            key
        )
    static = {
        "coevolution.topology": ["ring", "torus"],
        "operator": ["random", "variance"],
        "data.seed": [0, 1],
        "training.adam_beta1": [0.5, 0.9],
    }
    for key, values in static.items():
        experiment = "ae-prune" if key == "training.adam_beta1" else "ae-coevolution"
        assert len(sweeps.plan_groups(experiment, (0,), {key: values}, SWEEP_TINY)) == 2, key


# ---------------------------------------------------------------------------------------------
# CLI, end to end with resume.

CLI_TINY = [
    "--set",
    "data.dim=40",
    "--set",
    "data.num_train=20",
    "--set",
    "data.num_test=10",
    "--set",
    "data.num_clusters=3",
    "--set",
    "model.hidden_dim=6",
    "--set",
    "model.bottleneck_dim=3",
    "--set",
    "training.num_trials=2",
    "--set",
    "coevolution.num_cells=4",
    "--set",
    "operator=random",
    "--set",
    "schedule=fixed",
    "--set",
    "run.chunk_size=2",
    "--set",
    "run.checkpoint_every=2",
    "--set",
    "run.progress=false",
    "--set",
    "training.learning_rate=0.01",
]


def test_cli_run_and_plot(tmp_path):
    from synprune_jax.cli import main

    full = tmp_path / "full"  # resume: test_experiments.py checks it for every experiment
    args = ["run", "ae-coevolution", *CLI_TINY, "--set", "coevolution.order=synchronous"]
    assert main([*args, "--set", "run.num_generations=4", "--out", str(full)]) == 0
    config = json.loads((full / "config.json").read_text())
    assert config["pruning"]["probability"] == 0.5  # resolved from the operator
    summary = json.loads((full / "summary.json").read_text())
    assert summary["epochs"] == 4 and len(summary["l1_train"]["per_trial"]) == 2
    for name in ("curves.png", "boxplots.png", "summary.md"):
        assert (full / name).exists()
    (full / "boxplots.png").unlink()
    assert main(["plot", str(full)]) == 0 and (full / "boxplots.png").exists()


def test_cli_rejects_bad_config(tmp_path, capsys):
    from synprune_jax.cli import main

    assert (
        main(["run", "ae-prune", "--set", "operator=magnitude", "--out", str(tmp_path / "a")]) == 2
    )
    assert "unknown pruning operator" in capsys.readouterr().err
    assert (
        main(
            ["run", "ae-coevolution", "--set", "coevolution.radius=6", "--out", str(tmp_path / "b")]
        )
        == 2
    )
    assert "too large" in capsys.readouterr().err
    assert (
        main(
            [
                "run",
                "ae-coevolution",
                "--set",
                "coevolution.topology=torus",
                "--set",
                "coevolution.grid_shape=3x3",
                "--out",
                str(tmp_path / "d"),
            ]
        )
        == 2
    )
    assert "has 9 cells but num_cells is 10" in capsys.readouterr().err
    assert (
        main(
            [
                "run",
                "ae-coevolution",
                "--set",
                "coevolution.grid_shape=[2,5]",
                "--out",
                str(tmp_path / "e"),
            ]
        )
        == 2
    )
    assert "topology=torus only" in capsys.readouterr().err
    assert main(["run", "ae-prune", "--set", "setting=grid", "--out", str(tmp_path / "c")]) == 2
    # hyper-parameters are range-checked by the builder, before anything compiles
    assert (
        main(["run", "ae-prune", "--set", "pruning.amount=1.5", "--out", str(tmp_path / "f")]) == 2
    )
    assert "prune_amount must be in [0, 1], got 1.5" in capsys.readouterr().err
    assert (
        main(
            ["run", "ae-coevolution", "--set", "coevolution.lr_min=0", "--out", str(tmp_path / "g")]
        )
        == 2
    )
    assert "lr_min" in capsys.readouterr().err
    assert not any((tmp_path / name).exists() for name in "abcdefg")


@pytest.mark.slow
def test_notebook_runs_tiny(monkeypatch):
    import os

    import nbformat
    from nbclient import NotebookClient

    monkeypatch.setenv("SYNPRUNE_NOTEBOOK_TINY", "1")
    path = os.path.join(
        os.path.dirname(__file__), "..", "notebooks", "autoencoder_coevolution.ipynb"
    )
    notebook = nbformat.read(path, as_version=4)
    assert all(not cell.get("outputs") for cell in notebook.cells if cell.cell_type == "code")
    NotebookClient(notebook, timeout=300, kernel_name="python3").execute()
