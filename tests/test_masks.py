import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from synprune_jax import masks as M
from synprune_jax.networks import MLPSpec

SPEC = MLPSpec(input_size=3, output_size=2, hidden_sizes=(4, 3))


def _masks_from_kernels(spec, kernels):
    params = spec.init(jax.random.key(0))
    masks = spec.full_masks(params)
    return spec.replace_kernels(masks, [jnp.asarray(k, bool) for k in kernels])


def test_mlp_structure():
    params = SPEC.init(jax.random.key(0))
    shapes = [k.shape for k in SPEC.kernels(params)]
    assert shapes == [(3, 4), (4, 3), (3, 2)]
    assert SPEC.num_synapses == 12 + 12 + 6
    assert SPEC.num_units == 4 + 3 + 2
    assert SPEC.layer_sizes == (3, 4, 3, 2)


def test_bad_spec_rejected():
    with pytest.raises(ValueError, match="valid"):
        MLPSpec(3, 2, activation="gelu-ish")
    with pytest.raises(ValueError, match=">= 1"):
        MLPSpec(3, 2, hidden_sizes=(0,))


def test_exact_count_mask_hits_count():
    for count in (0, 1, 7, 20):
        mask = M.exact_count_mask(jax.random.key(count), (4, 5), count)
        assert int(mask.sum()) == count


def test_init_masks_exact_density_per_layer():
    params = SPEC.init(jax.random.key(0))
    masks = M.init_masks(jax.random.key(1), params, SPEC.maskable(), 0.5, exact=True)
    assert [int(k.sum()) for k in SPEC.kernels(masks)] == [6, 6, 3]
    assert all(bool(b.all()) for b in SPEC.biases(masks))  # biases unmasked


def test_init_masks_bernoulli_density_statistics():
    spec = MLPSpec(64, 64, hidden_sizes=(64,))
    params = spec.init(jax.random.key(0))
    masks = M.init_masks(jax.random.key(1), params, spec.maskable(), 0.3)
    assert abs(float(M.density(masks, spec.maskable())) - 0.3) < 0.02


@pytest.mark.parametrize("per_layer", [True, False])
def test_beta_init_spreads_over_sparsities(per_layer):
    spec = MLPSpec(input_size=10, output_size=10, hidden_sizes=(10,))
    params = spec.init(jax.random.key(0))
    masks = jax.vmap(
        lambda k: M.init_masks_beta(k, params, spec.maskable(), exact=True, per_layer=per_layer)
    )(jax.random.split(jax.random.key(3), 2000))
    layer = np.asarray(jax.vmap(lambda m: M.mask_statistics(spec, m).layer_density)(masks))
    overall = np.asarray(jax.vmap(lambda m: M.density(m, spec.maskable()))(masks))
    # Beta(1, 1): each layer's density is uniform on [0, 1] (100 connections per layer, so the
    # exact-count rounding is 0.01); every decile holds about 200 of 2000.
    for column in layer.T:
        counts, _ = np.histogram(column, bins=10, range=(0, 1 + 1e-9))
        assert (counts > 140).all() and (counts < 260).all(), counts
    if per_layer:  # layers drawn independently
        assert abs(np.corrcoef(layer.T)[0, 1]) < 0.1
    else:  # one draw shared by both layers: the overall density is uniform too
        np.testing.assert_allclose(layer[:, 0], layer[:, 1])
        counts, _ = np.histogram(overall, bins=10, range=(0, 1 + 1e-9))
        assert (counts > 140).all() and (counts < 260).all(), counts


def test_mask_statistics_exact_values():
    # input 3 -> hidden 4 -> hidden 3 -> output 2
    k0 = np.zeros((3, 4))
    k0[0, 0] = k0[1, 0] = k0[2, 1] = 1  # units 2, 3 of layer 1 dead
    k1 = np.zeros((4, 3))
    k1[0, 0] = k1[2, 1] = 1  # k1[2,1] comes from a dead unit
    k2 = np.zeros((3, 2))
    k2[0, 0] = k2[1, 0] = k2[2, 0] = 1  # output 1 dead
    masks = _masks_from_kernels(SPEC, [k0, k1, k2])
    stats = M.mask_statistics(SPEC, masks)
    assert int(stats.active_synapses) == 3 + 2 + 3
    np.testing.assert_allclose(stats.layer_density, [3 / 12, 2 / 12, 3 / 6])
    np.testing.assert_array_equal(stats.disconnected_per_layer, [2, 1, 1])
    assert float(stats.disconnected_fraction) == pytest.approx(4 / 9)
    assert float(stats.density) == pytest.approx(8 / 30)
    # effective: k0 (0,0),(1,0) feed unit0 which reaches out0 via hidden2 unit0 -> 2; k0 (2,1)
    # feeds unit1 which has no outgoing -> 0. k1 (0,0) -> 1; (2,1) source not forward-live -> 0.
    # k2 (0,0) -> 1; (1,0) source forward-dead (hidden2 unit1 only fed by dead unit) -> 0;
    # (2,0) source hidden2 unit2 has no input -> 0.
    assert int(stats.effective_macs) == 4


def test_forward_prune_cascades_and_removes_dead_outgoing():
    k0 = np.zeros((3, 4))
    k0[0, 0] = 1
    k1 = np.ones((4, 3))
    k2 = np.ones((3, 2))
    k1[0, :] = 0  # hidden-1 unit0 (the only live one) feeds nothing -> all of hidden 2 dead
    masks = _masks_from_kernels(SPEC, [k0, k1, k2])
    pruned = M.forward_prune(SPEC, masks)
    kernels = [np.asarray(k) for k in SPEC.kernels(pruned)]
    assert kernels[0].sum() == 1
    assert kernels[1].sum() == 0
    assert kernels[2].sum() == 0


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**30), density=st.floats(0.0, 1.0))
def test_forward_prune_leaves_no_connection_out_of_dead_unit(seed, density):
    params = SPEC.init(jax.random.key(0))
    masks = M.init_masks(jax.random.key(seed), params, SPEC.maskable(), density)
    pruned = M.forward_prune(SPEC, masks)
    kernels = [np.asarray(k) for k in SPEC.kernels(pruned)]
    for previous, kernel in zip(kernels[:-1], kernels[1:], strict=True):
        dead = ~previous.any(axis=0)
        assert not kernel[dead].any()
    # forward pruning only removes
    for before, after in zip(SPEC.kernels(masks), kernels, strict=True):
        assert not (np.asarray(after) & ~np.asarray(before)).any()


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 2**30),
    density=st.floats(0.0, 1.0),
    big=st.floats(-1e6, 1e6, allow_nan=False),
)
def test_pruned_weight_has_no_effect_on_outputs(seed, density, big):
    params = SPEC.init(jax.random.key(seed))
    masks = M.init_masks(jax.random.key(seed + 1), params, SPEC.maskable(), density)
    # overwrite every masked-out weight with an arbitrary value (and NaN in one leaf)
    poisoned = jax.tree_util.tree_map(lambda p, m: jnp.where(m, p, big), params, masks)
    first = SPEC.kernels(poisoned)[0]
    poisoned = SPEC.replace_kernels(
        poisoned, [jnp.where(SPEC.kernels(masks)[0], first, jnp.nan)] + SPEC.kernels(poisoned)[1:]
    )
    x = jax.random.normal(jax.random.key(seed + 2), (5, 3))
    np.testing.assert_array_equal(SPEC.apply(params, masks, x), SPEC.apply(poisoned, masks, x))


def test_layer_densities_follow_a_non_uniform_beta():
    draws = np.asarray(M.sample_layer_densities(jax.random.key(0), 20_000, 2.0, 5.0))
    # Beta(2, 5): mean 2/7, variance 10 / (49 * 8) = 0.0255 (sd of the mean ~0.0011).
    assert abs(draws.mean() - 2 / 7) < 0.006
    assert abs(draws.var() - 10 / 392) < 0.002
    uniform = np.asarray(M.sample_layer_densities(jax.random.key(0), 20_000))
    assert abs(uniform.mean() - 0.5) < 0.01 and abs(uniform.var() - 1 / 12) < 0.003


def _ranks_below(values, count):
    """The reference: ranks in a stable ascending sort (the double argsort of earlier releases)."""
    return np.argsort(np.argsort(values, kind="stable"), kind="stable") < count


def test_smallest_entries_matches_the_stable_sort_ranks():
    rng = np.random.default_rng(0)
    select = jax.jit(M.smallest_entries)
    for size, high in ((1, 5), (9, 3), (40, 4), (257, 2**30), (1000, 10), (3000, 2**23)):
        values = rng.integers(0, high, size).astype(np.int32)  # small ranges: many ties
        for count in sorted({0, 1, size // 3, size // 2, size - 1, size}):
            chosen = np.asarray(select(jnp.asarray(values), count))
            np.testing.assert_array_equal(
                chosen, _ranks_below(values, count), err_msg=f"{size} {high} {count}"
            )
    # 2**30 - 1 is the largest bit pattern of a float32 in [0, 1) that can matter here
    values = np.array([2**30 - 1, 0, 2**30 - 1, 5], np.int32)
    np.testing.assert_array_equal(
        np.asarray(select(jnp.asarray(values), 3)), [True, True, False, True]
    )


def test_smallest_entries_orders_floats_like_their_values():
    draws = np.array(jax.random.uniform(jax.random.key(5), (500,)))
    draws[::7] = draws[3]  # ties among floats: broken by index
    for count in (0, 1, 71, 250, 499, 500, 600):
        np.testing.assert_array_equal(
            np.asarray(M.smallest_entries(jnp.asarray(draws), count)),
            _ranks_below(draws, min(count, 500)),
            err_msg=str(count),
        )
