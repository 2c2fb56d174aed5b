"""Cluster-driven evolutionary synthesis: encoding formulas, LeNet masks / counts / compact
export, data loaders, the generation loop and the CLI."""

import json
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from synprune_jax.synthesis import (
    ClusterSynthesis,
    EncodingConfig,
    EncodingHyper,
    LeNetSpec,
    SynthesisConfig,
    SynthesisHyper,
    check_encoding_hyper,
    check_hyper,
    cluster_probabilities,
    cluster_sums,
    compact,
    gentle,
    kept_units,
    load_digits_32,
    load_mnist,
    network_stats,
    read_idx,
    remove_unused,
    survival_probabilities,
    synapse_probabilities,
    synthesize,
    truncate,
    write_idx,
)
from synprune_jax.synthesis.lenet import LAYERS

SQRT2_M1 = math.sqrt(2.0) - 1.0
# jitted once for the module (eager op-by-op dispatch is the slow part of these small tests)
stats_of = jax.jit(network_stats, static_argnums=0)
kept_of = jax.jit(kept_units, static_argnums=0)
apply_of = jax.jit(
    lambda spec, params, masks, images: spec.apply(params, masks, images), static_argnums=0
)
TINY_WIDTHS = (3, 4, 8, 6)


# ----- encoding formulas --------------------------------------------------------------------------


def test_synapse_probability_formula_is_exact():
    maximum = jnp.asarray(0.8, jnp.float32)
    magnitudes = jnp.asarray([0.0, 0.4, 0.8, 0.2], jnp.float32)
    p = synapse_probabilities(magnitudes, maximum)
    # exp(|w| / z) - 1 with z = max / ln 2: strongest -> exactly 1, half -> sqrt(2) - 1, dead -> 0
    assert float(p[2]) == 1.0 and float(p[0]) == 0.0
    np.testing.assert_allclose(p, [0.0, SQRT2_M1, 1.0, 2**0.25 - 1], rtol=1e-6)
    z = 0.8 / math.log(2.0)
    np.testing.assert_allclose(p, np.expm1(np.asarray(magnitudes) / z), rtol=1e-6, atol=1e-7)
    # the environmental factor scales them
    np.testing.assert_allclose(synapse_probabilities(magnitudes, maximum, 0.5), 0.5 * p, rtol=1e-7)
    # an all-dead layer has probability 0 everywhere (no division by zero)
    np.testing.assert_array_equal(
        synapse_probabilities(jnp.zeros(3), jnp.asarray(0.0)), np.zeros(3)
    )


def test_cluster_probability_with_truncation_is_exact():
    # dense kernel [in=3, out=3]: one neuron per column
    kernel = jnp.asarray([[1.0, 0.5, 0.05], [0.5, 0.25, 0.05], [0.05, 0.0, 0.05]], jnp.float32)
    truncated = truncate(kernel, 0.1)  # the 0.05 entries do not count
    sums = cluster_sums("dense1", truncated)
    np.testing.assert_allclose(sums, [1.5, 0.75, 0.0], rtol=1e-7)
    p = cluster_probabilities(sums, jnp.max(sums), factor=0.8)
    np.testing.assert_allclose(p, [0.8, 0.8 * SQRT2_M1, 0.0], rtol=1e-6)
    # conv kernels [5, 5, in, out]: filter clusters sum over (5, 5, in), kernel clusters over (5, 5)
    conv = jnp.arange(5 * 5 * 2 * 3, dtype=jnp.float32).reshape(5, 5, 2, 3)
    np.testing.assert_allclose(
        cluster_sums("conv2", conv, "filter"), np.asarray(conv).sum(axis=(0, 1, 2))
    )
    np.testing.assert_allclose(
        cluster_sums("conv2", conv, "kernel"), np.asarray(conv).sum(axis=(0, 1))
    )


def test_encoding_config_and_hyper_validate():
    with pytest.raises(ValueError, match="synapse_factor"):
        check_encoding_hyper(EncodingHyper(synapse_factor=0.0))
    with pytest.raises(ValueError, match="cluster_factor"):
        check_encoding_hyper(EncodingHyper(cluster_factor=1.5))
    with pytest.raises(ValueError, match="mode"):
        EncodingConfig(mode="neurons")
    with pytest.raises(ValueError, match="truncation"):
        check_encoding_hyper(EncodingHyper(truncation=1.0))
    with pytest.raises(ValueError, match="synapse_rate"):
        check_encoding_hyper(EncodingHyper(synapse_rate=0.0))
    with pytest.raises(ValueError, match="encoding.cluster_rate"):
        check_hyper(SynthesisHyper(encoding=EncodingHyper(cluster_rate=1.2)))
    check_hyper(SynthesisHyper())  # the defaults: the published encoding
    assert SynthesisHyper().encoding == EncodingHyper(1.0, 1.0, 0.1, 1.0, 1.0)


def test_removal_rate_formula_is_exact():
    p = jnp.asarray([0.0, 0.25, 0.5, 1.0], jnp.float32)
    # P' = 1 - r (1 - P): the removal probability 1 - P scaled by r
    np.testing.assert_allclose(gentle(p, 0.5), [0.5, 0.625, 0.75, 1.0], rtol=1e-7)
    np.testing.assert_allclose(gentle(p, 0.2), [0.8, 0.85, 0.9, 1.0], rtol=1e-7)
    assert gentle(p, 1.0) is p  # r = 1: the published probabilities, untouched


@pytest.fixture(scope="module")
def tiny_spec():
    return LeNetSpec(image_size=16, widths=TINY_WIDTHS)


@pytest.fixture(scope="module")
def tiny_network(tiny_spec):
    params = tiny_spec.init(jax.random.key(3))
    return params, tiny_spec.full_masks(params)


def test_survival_probabilities_per_layer(tiny_network):
    params, masks = tiny_network
    config = EncodingConfig(synapse_scope="layer")
    hyper = EncodingHyper(synapse_factor=0.9, cluster_factor=0.7, truncation=0.2)
    synapse, cluster = survival_probabilities(params, masks, config, hyper)
    for name in LAYERS:
        magnitude = np.abs(np.asarray(params[name]["kernel"]))
        expected = 0.9 * (2.0 ** (magnitude / magnitude.max()) - 1.0)
        np.testing.assert_allclose(synapse[name], expected, rtol=2e-6, atol=1e-7)
        assert float(jnp.max(synapse[name])) == pytest.approx(0.9, abs=1e-7)  # strongest: F_s
        if name == LAYERS[-1]:
            np.testing.assert_array_equal(cluster[name], 1.0)  # classes are never removed
            continue
        truncated = np.where(magnitude >= 0.2 * magnitude.max(), magnitude, 0.0)
        sums = truncated.reshape(-1, truncated.shape[-1]).sum(axis=0)
        np.testing.assert_allclose(
            cluster[name], 0.7 * (2.0 ** (sums / sums.max()) - 1.0), rtol=2e-6, atol=1e-7
        )
        assert float(jnp.max(cluster[name])) == pytest.approx(0.7, abs=1e-7)  # strongest: F_c
    # masked-out synapses have probability 0 and do not count toward the maximum
    dead = jax.tree_util.tree_map(lambda m: m, masks)
    dead["dense2"] = {**dead["dense2"], "kernel": dead["dense2"]["kernel"].at[0, :].set(False)}
    synapse_dead, _ = survival_probabilities(params, dead, config, hyper)
    np.testing.assert_array_equal(synapse_dead["dense2"][0], 0.0)
    assert float(jnp.max(synapse_dead["dense2"])) == pytest.approx(0.9, abs=1e-7)


def test_removal_rates_scale_the_survival_probabilities(tiny_network):
    params, masks = tiny_network
    config = EncodingConfig()
    base = EncodingHyper(synapse_factor=0.9, cluster_factor=0.7, truncation=0.2)
    synapse, cluster = survival_probabilities(params, masks, config, base)
    # a rate of 1 leaves the (published, numpy-checked above) probabilities untouched, bit for
    # bit, whether it is a Python float or traced (a sweep)
    values = jnp.asarray([0.0, 1e-9, 0.3, 0.7, 1.0], jnp.float32)
    assert gentle(values, 1.0) is values
    chex.assert_trees_all_equal(jax.jit(gentle)(values, jnp.float32(1.0)), values)
    np.testing.assert_allclose(
        jax.jit(gentle)(values, jnp.float32(0.25)), gentle(values, 0.25), rtol=1e-6
    )
    gentler = base.replace(synapse_rate=0.4, cluster_rate=0.25)
    synapse_g, cluster_g = survival_probabilities(params, masks, config, gentler)
    for name in LAYERS:
        np.testing.assert_allclose(
            synapse_g[name], 1.0 - 0.4 * (1.0 - np.asarray(synapse[name])), rtol=1e-6, atol=1e-7
        )
        expected = 1.0 if name == LAYERS[-1] else 1.0 - 0.25 * (1.0 - np.asarray(cluster[name]))
        np.testing.assert_allclose(cluster_g[name], expected, rtol=1e-6, atol=1e-7)
    # dead synapses keep probability 0 (not 1 - r)
    dead = {
        **masks,
        "dense2": {**masks["dense2"], "kernel": masks["dense2"]["kernel"].at[0, :].set(False)},
    }
    synapse_dead, _ = survival_probabilities(params, dead, config, gentler)
    np.testing.assert_array_equal(synapse_dead["dense2"][0], 0.0)


def test_removal_fraction_scales_with_the_rate(tiny_network):
    """Synapse-only encoding: the expected removed fraction is r * mean(1 - P); measured over
    many fixed-key draws it matches to within 6 standard errors (about 0.01; deterministic)."""
    params, masks = tiny_network
    keys = jax.random.split(jax.random.key(11), 64)
    total = sum(int(np.sum(masks[name]["kernel"])) for name in LAYERS)
    means = {}
    for rate in (1.0, 0.5, 0.25):
        config, hyper = EncodingConfig(mode="synapse"), EncodingHyper(synapse_rate=rate)
        drawn = jax.jit(
            jax.vmap(
                lambda k, config=config, hyper=hyper: synthesize(k, params, masks, config, hyper)
            )
        )(keys)
        kept = sum(np.asarray(drawn[name]["kernel"]).reshape(64, -1).sum(axis=1) for name in LAYERS)
        removed = 1.0 - kept / total
        synapse, _ = survival_probabilities(params, masks, config, hyper)
        expected = 1.0 - sum(float(jnp.sum(synapse[name])) for name in LAYERS) / total
        # per-draw removed fraction has variance <= 1 / (4 total); 64 draws average it
        assert abs(removed.mean() - expected) < 6 * 0.5 / math.sqrt(64 * total)
        means[rate] = removed.mean()
    published = means[1.0]
    assert published > 0.3  # the magnitude rule removes a lot at r = 1
    for rate in (0.5, 0.25):
        assert abs(means[rate] - rate * published) < 12 * 0.5 / math.sqrt(64 * total)


def test_synapse_normalisation_scopes(tiny_network):
    params, masks = tiny_network
    synapse, _ = survival_probabilities(
        params, masks, EncodingConfig(synapse_scope="network"), EncodingHyper()
    )
    overall = max(float(jnp.max(jnp.abs(params[name]["kernel"]))) for name in LAYERS)
    for name in LAYERS:
        magnitude = np.abs(np.asarray(params[name]["kernel"]))
        np.testing.assert_allclose(
            synapse[name], 2.0 ** (magnitude / overall) - 1.0, rtol=2e-6, atol=1e-7
        )
    # per cluster: the strongest synapse of every filter / neuron has probability exactly 1
    synapse, _ = survival_probabilities(
        params, masks, EncodingConfig(synapse_scope="cluster"), EncodingHyper()
    )
    for name in LAYERS:
        magnitude = np.abs(np.asarray(params[name]["kernel"]))
        flat = magnitude.reshape(-1, magnitude.shape[-1])
        expected = 2.0 ** (flat / flat.max(axis=0, keepdims=True)) - 1.0
        probabilities = np.asarray(synapse[name]).reshape(flat.shape)
        np.testing.assert_allclose(probabilities, expected, rtol=2e-6, atol=1e-7)
        np.testing.assert_array_equal(probabilities.max(axis=0), 1.0)


def _draws(params, masks, config, hyper, count):
    keys = jax.random.split(jax.random.key(11), count)
    return jax.jit(jax.vmap(lambda k: synthesize(k, params, masks, config, hyper)))(keys)


def test_synapse_only_ablation_matches_probabilities(tiny_network):
    params, masks = tiny_network
    config, hyper = EncodingConfig(mode="synapse"), EncodingHyper(synapse_factor=0.6)
    draws = _draws(params, masks, config, hyper, 2000)
    synapse, _ = survival_probabilities(params, masks, config, hyper)
    for name in ("conv2", "dense2"):
        frequency = np.asarray(draws[name]["kernel"]).mean(axis=0)
        np.testing.assert_allclose(frequency, synapse[name], atol=0.05)  # 2000 Bernoulli draws
    # bias masks: a cluster lives iff one of its synapses survived
    for name in LAYERS[:-1]:
        kernel = np.asarray(draws[name]["kernel"])
        alive = kernel.reshape(kernel.shape[0], -1, kernel.shape[-1]).any(axis=1)
        np.testing.assert_array_equal(np.asarray(draws[name]["bias"]), alive)
    np.testing.assert_array_equal(np.asarray(draws["dense3"]["bias"]), True)


def test_cluster_only_ablation_keeps_whole_clusters(tiny_network):
    params, masks = tiny_network
    config = EncodingConfig(mode="cluster")
    draws = _draws(params, masks, config, EncodingHyper(), 500)
    _, cluster = survival_probabilities(params, masks, config, EncodingHyper())
    for name in LAYERS[:-1]:
        kernel = np.asarray(draws[name]["kernel"])
        flat = kernel.reshape(kernel.shape[0], -1, kernel.shape[-1])
        # every cluster is kept whole or removed whole
        assert np.all(flat.all(axis=1) == flat.any(axis=1))
        frequency = flat.all(axis=1).mean(axis=0)
        np.testing.assert_allclose(frequency, cluster[name], atol=0.08)
        strongest = int(np.argmax(np.asarray(cluster[name])))
        assert flat[:, :, strongest].all()  # probability exactly 1 before F
    np.testing.assert_array_equal(np.asarray(draws["dense3"]["kernel"]), True)


def test_kernel_clusters(tiny_network):
    params, masks = tiny_network
    config = EncodingConfig(mode="cluster", conv_clusters="kernel")
    _, cluster = survival_probabilities(params, masks, config, EncodingHyper())
    assert cluster["conv2"].shape == (TINY_WIDTHS[0], TINY_WIDTHS[1])
    draws = _draws(params, masks, config, EncodingHyper(), 50)
    kernel = np.asarray(draws["conv2"]["kernel"])  # [K, 5, 5, in, out]
    assert np.all(kernel.all(axis=(1, 2)) == kernel.any(axis=(1, 2)))  # whole 5x5 kernels


def test_full_encoding_only_removes(tiny_network):
    params, masks = tiny_network
    config, hyper = EncodingConfig(), EncodingHyper(synapse_factor=0.8, cluster_factor=0.8)
    first = synthesize(jax.random.key(0), params, masks, config, hyper)
    second = synthesize(jax.random.key(1), params, first, config, hyper)
    for name in LAYERS:
        for leaf in ("kernel", "bias"):
            child, parent = np.asarray(second[name][leaf]), np.asarray(first[name][leaf])
            assert not np.any(child & ~parent), (name, leaf)
    assert int(network_stats(LeNetSpec(image_size=16, widths=TINY_WIDTHS), second).synapses) < int(
        network_stats(LeNetSpec(image_size=16, widths=TINY_WIDTHS), first).synapses
    )


# ----- LeNet counts and compact export ------------------------------------------------------------


def test_lenet_counts_for_the_full_network():
    spec = LeNetSpec()
    params = spec.init(jax.random.key(0))
    assert params["dense1"]["kernel"].shape == (400, 120)
    stats = stats_of(spec, spec.full_masks(params))
    assert int(stats.synapses) == spec.num_synapses == 150 + 2400 + 48000 + 10080 + 840
    assert int(stats.effective_synapses) == spec.num_synapses
    assert int(stats.clusters) == spec.num_clusters == 6 + 16 + 120 + 84
    macs = 150 * 28 * 28 + 2400 * 10 * 10 + 48000 + 10080 + 840
    assert float(stats.flops) == 2.0 * macs
    assert spec.apply(params, spec.full_masks(params), jnp.zeros((2, 32, 32, 1))).shape == (2, 10)
    mnist = LeNetSpec(image_size=28)
    assert mnist.pooled_size == 4 and mnist.layer_inputs[2] == 256


def test_kept_units_and_stats_after_removing_a_filter():
    spec = LeNetSpec()
    params = spec.init(jax.random.key(0))
    masks = spec.full_masks(params)
    # conv2 filter 3 dead (kernel + bias), dense2 neuron 5 has no outgoing synapse
    masks["conv2"] = {
        "kernel": masks["conv2"]["kernel"].at[..., 3].set(False),
        "bias": masks["conv2"]["bias"].at[3].set(False),
    }
    masks["dense3"] = {**masks["dense3"], "kernel": masks["dense3"]["kernel"].at[5, :].set(False)}
    kept = kept_of(spec, masks)
    assert [int(jnp.sum(k)) for k in kept] == [6, 15, 120, 83, 10]
    assert not bool(kept[1][3]) and not bool(kept[3][5])
    stats = stats_of(spec, masks)
    assert int(stats.clusters) == 226 - 2
    assert int(stats.synapses) == 61470 - 150 - 10
    # effective: also drops dense1 rows of filter 3 (25 * 120) and dense2 column 5 (120)
    assert int(stats.effective_synapses) == 61470 - 150 - 10 - 25 * 120 - 120


COMPACT_WIDTHS = (4, 8, 24, 12)


def _synthesised(seed, widths, generations=3):
    spec = LeNetSpec(widths=widths)
    key_params, key_masks, key_images = jax.random.split(jax.random.key(seed), 3)
    params = jax.tree_util.tree_map(lambda p: p + 0.05, spec.init(key_params))  # non-zero biases
    masks = spec.full_masks(params)
    draw = jax.jit(lambda k, m: synthesize(k, params, m, EncodingConfig(), EncodingHyper()))
    for key in jax.random.split(key_masks, generations):
        masks = draw(key, masks)
    return spec, params, masks, jax.random.uniform(key_images, (8, 32, 32, 1))


@pytest.mark.parametrize("seed", [0, pytest.param(1, marks=pytest.mark.slow)])
def test_compact_network_outputs_equal_masked_network(seed):
    spec, params, masks, images = _synthesised(seed, COMPACT_WIDTHS)
    compacted = compact(spec, params, masks)
    assert compacted.widths == tuple(int(jnp.sum(k)) or 1 for k in kept_of(spec, masks)[:-1])
    assert compacted.widths != spec.widths
    assert compacted.num_weights < spec.num_synapses
    assert compacted.num_weights >= int(stats_of(spec, masks).effective_synapses)
    np.testing.assert_allclose(
        compacted.apply(images), apply_of(spec, params, masks, images), rtol=1e-5, atol=1e-5
    )


def test_remove_unused_preserves_outputs_and_counts_effective_synapses():
    spec, params, masks, images = _synthesised(2, COMPACT_WIDTHS)
    cleaned = jax.jit(remove_unused, static_argnums=0)(spec, masks)
    before, after = stats_of(spec, masks), stats_of(spec, cleaned)
    assert int(after.synapses) == int(after.effective_synapses) == int(before.effective_synapses)
    assert int(before.synapses) > int(after.synapses)  # there were dead-end synapses
    assert int(after.clusters) == int(before.clusters)
    np.testing.assert_allclose(
        apply_of(spec, params, cleaned, images),
        apply_of(spec, params, masks, images),
        rtol=1e-6,
        atol=1e-6,
    )
    # synthesize(..., spec) cleans as it goes
    drawn = jax.jit(lambda k, m: synthesize(k, params, m, EncodingConfig(), EncodingHyper(), spec))(
        jax.random.key(4), cleaned
    )
    stats = stats_of(spec, drawn)
    assert int(stats.synapses) == int(stats.effective_synapses)


def test_compact_handles_a_layer_with_no_units():
    spec = LeNetSpec(widths=TINY_WIDTHS)
    params = jax.tree_util.tree_map(lambda p: p + 0.1, spec.init(jax.random.key(5)))
    masks = spec.full_masks(params)
    masks["dense2"] = jax.tree_util.tree_map(jnp.zeros_like, masks["dense2"])
    images = jax.random.uniform(jax.random.key(6), (4, 32, 32, 1))
    compacted = compact(spec, params, masks)
    assert compacted.widths == (1, 1, 1, 1)  # nothing reaches the output: one zero unit each
    np.testing.assert_allclose(
        compacted.apply(images), apply_of(spec, params, masks, images), rtol=1e-6, atol=1e-6
    )


# ----- data ---------------------------------------------------------------------------------------


def test_idx_round_trip_and_errors(tmp_path):
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    for name in ("a-idx3-ubyte", "a-idx3-ubyte.gz"):
        write_idx(tmp_path / name, array)
        back = read_idx(tmp_path / name)
        assert back.dtype == np.uint8
        np.testing.assert_array_equal(back, array)
    raw = (tmp_path / "a-idx3-ubyte").read_bytes()
    assert raw[:4] == bytes([0, 0, 8, 3]) and raw[4:8] == (2).to_bytes(4, "big")
    (tmp_path / "bad").write_bytes(b"\x01\x00\x08\x01" + raw[4:])
    with pytest.raises(ValueError, match="magic"):
        read_idx(tmp_path / "bad")
    (tmp_path / "short").write_bytes(raw[:-1])
    with pytest.raises(ValueError, match="header says"):
        read_idx(tmp_path / "short")


def test_mnist_loader_on_small_idx_files(tmp_path):
    rng = np.random.default_rng(0)
    train = rng.integers(0, 256, (24, 28, 28), dtype=np.uint8)
    train_labels = (np.arange(24) % 10).astype(np.uint8)
    test = rng.integers(0, 256, (6, 28, 28), dtype=np.uint8)
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", train)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", train_labels)
    write_idx(tmp_path / "t10k-images-idx3-ubyte", test)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.arange(6, dtype=np.uint8))
    data = load_mnist(tmp_path, validation_fraction=0.25)
    assert data.train_images.shape == (18, 32, 32, 1) and data.validation_images.shape[0] == 6
    assert data.test_images.shape == (6, 32, 32, 1) and data.num_classes == 10
    np.testing.assert_allclose(data.test_images[:, 2:30, 2:30, 0], test / 255.0, rtol=1e-6)
    assert np.all(data.test_images[:, :2] == 0) and data.test_labels.dtype == np.int32
    # every training example lands in exactly one split, with its label
    together = np.concatenate([data.train_images, data.validation_images])[:, 2:30, 2:30, 0]
    labels = np.concatenate([data.train_labels, data.validation_labels])
    pixels = np.round(together * 255.0).astype(np.uint8)
    order = np.argsort([int(np.flatnonzero((train == img).all(axis=(1, 2)))[0]) for img in pixels])
    np.testing.assert_array_equal(labels[order], train_labels)
    unpadded = load_mnist(tmp_path, validation_fraction=0.25, pad_to_32=False, max_train=5)
    assert unpadded.train_images.shape == (5, 28, 28, 1)
    with pytest.raises(FileNotFoundError):
        load_mnist(tmp_path / "missing")


def test_digits_at_32x32():
    data = load_digits_32(validation_fraction=0.2, test_fraction=0.2, split_seed=0)
    sizes = [len(data.train_labels), len(data.validation_labels), len(data.test_labels)]
    assert sum(sizes) == 1797 and sizes[2] == 359 and sizes[1] == 288
    assert data.train_images.shape[1:] == (32, 32, 1) and data.train_images.dtype == np.float32
    assert data.train_images.min() >= 0.0 and data.train_images.max() <= 1.0
    assert set(np.unique(data.train_labels)) == set(range(10))


# ----- the generation loop ------------------------------------------------------------------------

TINY_HYPER = SynthesisHyper(learning_rate=3e-3, encoding=EncodingHyper(synapse_factor=0.9))


def _tiny_data():
    data = load_digits_32()
    return data._replace(train_images=data.train_images[:96], train_labels=data.train_labels[:96])


@pytest.fixture(scope="module")
def tiny_algorithm():
    config = SynthesisConfig(
        network=LeNetSpec(widths=TINY_WIDTHS),
        num_offspring=2,
        epochs=1,
        ancestor_epochs=2,
        batch_size=32,
        patience=2,
    )
    algorithm = ClusterSynthesis(config, _tiny_data())
    jitted = jax.jit(chex.assert_max_traces(algorithm.step, n=1))
    state = jax.jit(algorithm.init)(jax.random.key(0), TINY_HYPER)
    return algorithm, lambda key, state: jitted(key, state, TINY_HYPER), state


def test_generation_synthesises_trains_and_counts(tiny_algorithm):
    algorithm, step, state = tiny_algorithm
    assert int(state.generation) == 0 and not bool(state.stopped)
    assert int(state.ancestor_synapses) == algorithm.spec.num_synapses
    new, metrics = step(jax.random.key(1), state)
    new2, _ = step(jax.random.key(2), new)  # no retrace (assert_max_traces)
    assert int(new.generation) == 1 and int(new2.generation) == 2
    assert bool(metrics["accepted"])  # the tiny ancestor is weak: any offspring is within 2 points
    for name in LAYERS:
        parent, child = (
            np.asarray(state.masks[name]["kernel"]),
            np.asarray(new.masks[name]["kernel"]),
        )
        assert not np.any(child & ~parent)
        # trained weights are masked: dead synapses hold exactly zero
        assert np.all(np.asarray(new.params[name]["kernel"])[~child] == 0)
    stats = network_stats(algorithm.spec, new.masks)
    assert int(metrics["synapses"]) == int(stats.synapses) < algorithm.spec.num_synapses
    assert float(metrics["synapse_reduction"]) == pytest.approx(
        algorithm.spec.num_synapses / int(stats.synapses), rel=1e-6
    )
    assert float(metrics["cluster_reduction"]) == pytest.approx(
        algorithm.spec.num_clusters / int(stats.clusters), rel=1e-6
    )
    assert float(metrics["test_accuracy"]) == pytest.approx(
        float(algorithm.accuracy(new.params, new.masks, "test")), abs=1e-7
    )
    # the state holds no keys and the generation counter is int32
    assert new.generation.dtype == jnp.int32


def test_rejected_offspring_keep_the_parent_and_stop(tiny_algorithm):
    algorithm, step, state = tiny_algorithm
    impossible = state.replace(ancestor_validation_accuracy=jnp.asarray(2.0, jnp.float32))
    first, metrics = step(jax.random.key(1), impossible)
    assert not bool(metrics["accepted"]) and int(first.rejections) == 1
    assert not bool(first.stopped)
    chex.assert_trees_all_equal(first.params, state.params)
    chex.assert_trees_all_equal(first.masks, state.masks)
    second, metrics = step(jax.random.key(2), first)
    assert bool(second.stopped) and bool(metrics["stopped"])  # patience 2
    third, metrics = step(jax.random.key(3), second)  # stopped: a no-op
    assert int(third.generation) == 3 and not bool(metrics["accepted"])
    assert np.isnan(float(metrics["offspring_validation_accuracy"]))
    chex.assert_trees_all_equal(third.params, state.params)


@pytest.mark.slow
def test_training_lowers_the_loss(tiny_algorithm):
    algorithm, _, _ = tiny_algorithm
    params = algorithm.spec.init(jax.random.key(9))
    masks = algorithm.spec.full_masks(params)
    images, labels = algorithm.train_images, algorithm.train_labels
    before = float(algorithm.loss(params, masks, images, labels))
    trained = jax.jit(algorithm.train, static_argnums=3)(jax.random.key(1), params, masks, 3, 3e-3)
    assert float(algorithm.loss(trained, masks, images, labels)) < before


def test_config_validation():
    with pytest.raises(ValueError, match="num_offspring"):
        SynthesisConfig(num_offspring=0)
    with pytest.raises(ValueError, match="tolerance"):
        check_hyper(SynthesisHyper(tolerance=-0.1))
    with pytest.raises(ValueError, match="learning_rate"):
        check_hyper(SynthesisHyper(learning_rate=0.0))
    with pytest.raises(ValueError, match="widths"):
        LeNetSpec(widths=(6, 16, 120))


def test_training_follows_the_epoch_permutations(tiny_algorithm):
    """ClusterSynthesis.train is fit with the key split into epoch keys: it equals the plain
    loop over jax.random.permutation(split(key, epochs)[e], N) minibatches, dropping the last
    partial batch (96 = 3 x 32 here, so 2 epochs of 3 Adam steps)."""
    import optax

    algorithm, _, _ = tiny_algorithm
    params = algorithm.spec.init(jax.random.key(9))
    masks = algorithm.spec.full_masks(params)
    masks["dense1"]["kernel"] = masks["dense1"]["kernel"].at[:5].set(False)
    optimizer = algorithm.optimizer(6, 3e-3)

    def plain(key, params):
        opt_state = optimizer.init(params)
        for epoch_key in jax.random.split(key, 2):
            order = jax.random.permutation(epoch_key, 96).reshape(3, 32)
            for indices in order:
                grads = jax.grad(algorithm.loss)(
                    params, masks, algorithm.train_images[indices], algorithm.train_labels[indices]
                )
                updates, opt_state = optimizer.update(grads, opt_state, params)
                params = optax.apply_updates(params, updates)
        return jax.tree_util.tree_map(lambda p, m: jnp.where(m, p, 0.0), params, masks)

    trained = jax.jit(algorithm.train, static_argnums=3)(jax.random.key(1), params, masks, 2, 3e-3)
    chex.assert_trees_all_close(
        trained, jax.jit(plain)(jax.random.key(1), params), rtol=1e-5, atol=1e-7
    )
    assert not np.any(np.asarray(trained["dense1"]["kernel"])[:5])


def test_algorithm_is_static_structure():
    """Equal configs and identical data make equal, equally hashed algorithms (a sweep compiles
    them once); the learning rate, tolerance and encoding constants are the hyper-parameters."""
    from synprune_jax import config as config_lib
    from synprune_jax.experiments import get_experiment

    entry = get_experiment("cluster-synthesis")
    tiny = ["network.widths=3,4,8,6", "data.max_train=96"]
    built = [
        entry.build(config_lib.apply_overrides(entry.default_config(), tiny + extra))
        for extra in (
            [],
            ["synthesis.learning_rate=0.01", "encoding.truncation=0.2", "synthesis.tolerance=0.05"],
            ["encoding.mode=synapse"],
        )
    ]
    assert built[0].algorithm == built[1].algorithm
    assert hash(built[0].algorithm) == hash(built[1].algorithm)
    assert built[0].algorithm != built[2].algorithm
    assert built[1].hyper == SynthesisHyper(
        learning_rate=0.01,
        tolerance=0.05,
        encoding=EncodingHyper(synapse_rate=0.25, cluster_rate=0.1, truncation=0.2),
    )
    assert built[0].algorithm.default_hyper == SynthesisHyper()
    other_data = ClusterSynthesis(
        built[0].algorithm.config,
        _tiny_data()._replace(train_labels=_tiny_data().train_labels[::-1].copy()),
    )
    assert other_data != built[0].algorithm


# ----- CLI ----------------------------------------------------------------------------------------

TINY_RUN = [
    "cluster-synthesis",
    "--set",
    "network.widths=3,4,8,6",
    "--set",
    "data.max_train=96",
    "--set",
    "synthesis.epochs=1",
    "--set",
    "synthesis.ancestor_epochs=1",
    "--set",
    "synthesis.num_offspring=1",
    "--set",
    "run.chunk_size=1",
    "--set",
    "run.checkpoint_every=1",
    "--set",
    "run.progress=false",
]


@pytest.mark.slow
def test_cli_run(tmp_path, capsys):
    from synprune_jax.cli import main

    full = tmp_path / "full"  # resume: test_experiments.py checks it for every experiment
    assert main(["run", *TINY_RUN, "--set", "run.num_generations=3", "--out", str(full)]) == 0
    printed = capsys.readouterr().out
    assert "| synapses |" in printed and "clusters" in printed
    for name in (
        "config.json",
        "metrics.csv",
        "summary.json",
        "summary.md",
        "curves.png",
        "compact.npz",
    ):
        assert (full / name).stat().st_size > 0, name
    summary = json.loads((full / "summary.json").read_text())
    assert summary["generations"] == 3 and summary["synapse_reduction"] >= 1.0
    assert summary["ancestor_synapses"] == LeNetSpec(widths=(3, 4, 8, 6)).num_synapses
    exported = np.load(full / "compact.npz")
    assert list(exported["widths"]) == summary["compact_widths"]


def test_cli_rejects_bad_config(tmp_path, capsys):
    from synprune_jax.cli import main

    assert (
        main(
            [
                "run",
                "cluster-synthesis",
                "--set",
                "encoding.mode=neurons",
                "--out",
                str(tmp_path / "a"),
            ]
        )
        == 2
    )
    assert "mode" in capsys.readouterr().err
    assert (
        main(["run", "cluster-synthesis", "--set", "data.name=mnist", "--out", str(tmp_path / "b")])
        == 2
    )
    assert "mnist_dir" in capsys.readouterr().err
    # hyper-parameters are range-checked by the builder, before anything compiles
    assert (
        main(
            [
                "run",
                "cluster-synthesis",
                "--set",
                "encoding.synapse_rate=0",
                "--out",
                str(tmp_path / "c"),
            ]
        )
        == 2
    )
    assert "encoding.synapse_rate must be in (0, 1]" in capsys.readouterr().err
    assert (
        main(
            [
                "run",
                "cluster-synthesis",
                "--set",
                "synthesis.tolerance=2",
                "--out",
                str(tmp_path / "d"),
            ]
        )
        == 2
    )
    assert "synthesis.tolerance must be in [0, 1]" in capsys.readouterr().err
    assert not any((tmp_path / name).exists() for name in "abcd")
