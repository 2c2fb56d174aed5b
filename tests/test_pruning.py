import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from synprune_jax import masks as M
from synprune_jax import pruning as P
from synprune_jax.networks import MLPSpec

SPEC = MLPSpec(input_size=4, output_size=3, hidden_sizes=(5,))
MASKABLE = SPEC.maskable()


def _kernel_counts(masks):
    return [int(np.asarray(k).sum()) for k in SPEC.kernels(masks)]


def test_select_lowest_ties_broken_by_index():
    scores = jnp.array([1.0, 0.5, 0.5, 0.5, 2.0])
    candidates = jnp.array([True, True, False, True, True])
    chosen = P.select_lowest(scores, candidates, 2)
    assert chosen.tolist() == [False, True, False, True, False]
    # more requested than candidates: all candidates, nothing else
    assert P.select_lowest(scores, candidates, 10).tolist() == candidates.tolist()


def test_prune_magnitude_layer_exact_values():
    params = {"a": jnp.array([[0.4, -0.1], [0.1, 0.3]]), "b": jnp.array([0.5, 0.2, 0.3, 0.1])}
    masks = {"a": jnp.ones((2, 2), bool), "b": jnp.array([True, True, False, True])}
    out = P.prune_magnitude(params, masks, {"a": True, "b": True}, 0.5)
    # a: 4 active, k=2: |-0.1| (index 1) and |0.1| (index 2) tie; both go
    assert out["a"].tolist() == [[True, False], [False, True]]
    # b: 3 active, k=floor(1.5)=1: smallest active |w| is index 3 (0.1)
    assert out["b"].tolist() == [True, True, False, False]


def test_prune_magnitude_global_exact_count_and_ties():
    params = {"a": jnp.array([0.1, 0.1, 0.9]), "b": jnp.array([0.1, 0.05])}
    masks = {"a": jnp.ones(3, bool), "b": jnp.ones(2, bool)}
    out = P.prune_magnitude(params, masks, {"a": True, "b": True}, count=3, scope="global")
    # order: b[1]=0.05, then the three 0.1 by flat index a[0], a[1], b[0] -> a[0], a[1]
    assert out["a"].tolist() == [False, False, True]
    assert out["b"].tolist() == [True, False]


def test_non_maskable_leaves_untouched():
    params = SPEC.init(jax.random.key(0))
    masks = SPEC.full_masks(params)
    out = P.prune_magnitude(params, masks, MASKABLE, 0.9, scope="global")
    assert all(bool(b.all()) for b in SPEC.biases(out))
    out = P.prune_random(jax.random.key(1), masks, MASKABLE, count=3)
    assert all(bool(b.all()) for b in SPEC.biases(out))


def test_prune_to_density_layer_and_global():
    params = SPEC.init(jax.random.key(0))
    masks = SPEC.full_masks(params)
    layer = P.prune_magnitude_to_density(params, masks, MASKABLE, 0.25)
    assert _kernel_counts(layer) == [5, 3]  # floor(0.25*20), floor(0.25*15)
    glob = P.prune_magnitude_to_density(params, masks, MASKABLE, 0.25, scope="global")
    assert sum(_kernel_counts(glob)) == 8  # floor(0.25*35)
    # global keeps the 8 largest |w| overall
    weights = np.concatenate([np.abs(np.asarray(k)).ravel() for k in SPEC.kernels(params)])
    kept = np.concatenate([np.asarray(k).ravel() for k in SPEC.kernels(glob)])
    assert weights[kept].min() >= weights[~kept].max()
    # never regrows
    again = P.prune_magnitude_to_density(params, glob, MASKABLE, 0.9, scope="global")
    assert sum(_kernel_counts(again)) == 8


def test_regrow_exact_and_magnitude_criterion():
    params = {"w": jnp.array([0.1, -0.9, 0.5, 0.3])}
    masks = {"w": jnp.array([True, False, False, False])}
    out = P.regrow(jax.random.key(0), params, masks, {"w": True}, count=2, criterion="magnitude")
    assert out["w"].tolist() == [True, True, True, False]
    out = P.regrow(jax.random.key(0), params, masks, {"w": True}, count=2)
    assert int(out["w"].sum()) == 3 and bool(out["w"][0])
    with pytest.raises(ValueError, match="valid"):
        P.regrow(jax.random.key(0), params, masks, {"w": True}, count=1, criterion="gradient")


def test_bad_arguments_rejected():
    params = {"w": jnp.ones(3)}
    masks = {"w": jnp.ones(3, bool)}
    with pytest.raises(ValueError, match="valid"):
        P.prune_magnitude(params, masks, {"w": True}, 0.5, scope="network")
    with pytest.raises(ValueError, match="exactly one"):
        P.prune_magnitude(params, masks, {"w": True}, 0.5, count=1)


def test_flip_mutation_rates():
    spec = MLPSpec(100, 100, hidden_sizes=())
    params = spec.init(jax.random.key(0))
    masks = M.init_masks(jax.random.key(1), params, spec.maskable(), 0.5, exact=True)
    out = P.flip_mutation(jax.random.key(2), masks, spec.maskable(), 0.2, 0.1)
    before, after = np.asarray(spec.kernels(masks)[0]), np.asarray(spec.kernels(out)[0])
    cut = (before & ~after).sum() / before.sum()
    restored = (~before & after).sum() / (~before).sum()
    assert abs(cut - 0.2) < 0.02 and abs(restored - 0.1) < 0.02
    none = P.flip_mutation(jax.random.key(2), masks, spec.maskable(), 0.0, 0.0)
    np.testing.assert_array_equal(spec.kernels(none)[0], before)


# ----- properties ------------------------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**30),
    density=st.floats(0.0, 1.0),
    amount=st.floats(0.0, 1.0),
    scope=st.sampled_from(["layer", "global"]),
)
def test_pure_pruning_never_raises_density_and_only_removes(seed, density, amount, scope):
    params = SPEC.init(jax.random.key(seed))
    masks = M.init_masks(jax.random.key(seed + 1), params, MASKABLE, density)
    for out in (
        P.prune_magnitude(params, masks, MASKABLE, amount, scope=scope),
        P.prune_random(jax.random.key(seed + 2), masks, MASKABLE, amount, scope=scope),
        P.prune_magnitude_to_density(params, masks, MASKABLE, amount, scope=scope),
        P.flip_mutation(jax.random.key(seed + 3), masks, MASKABLE, amount, 0.0),
        M.forward_prune(SPEC, masks),
    ):
        assert float(M.density(out, MASKABLE)) <= float(M.density(masks, MASKABLE))
        for before, after in zip(
            jax.tree_util.tree_leaves(masks), jax.tree_util.tree_leaves(out), strict=True
        ):
            assert not (np.asarray(after) & ~np.asarray(before)).any()


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**30),
    density=st.floats(0.0, 1.0),
    count=st.integers(0, 40),
    scope=st.sampled_from(["layer", "global"]),
)
def test_exact_k_operators_hit_k_exactly(seed, density, count, scope):
    params = SPEC.init(jax.random.key(seed))
    masks = M.init_masks(jax.random.key(seed + 1), params, MASKABLE, density)
    active = _kernel_counts(masks)
    inactive = [20 - active[0], 15 - active[1]]
    key = jax.random.key(seed + 2)
    pruned_m = _kernel_counts(P.prune_magnitude(params, masks, MASKABLE, count=count, scope=scope))
    pruned_r = _kernel_counts(P.prune_random(key, masks, MASKABLE, count=count, scope=scope))
    grown = _kernel_counts(P.regrow(key, params, masks, MASKABLE, count=count, scope=scope))
    if scope == "layer":
        expected_removed = [min(count, a) for a in active]
        expected_added = [min(count, i) for i in inactive]
        assert [a - b for a, b in zip(active, pruned_m, strict=True)] == expected_removed
        assert [a - b for a, b in zip(active, pruned_r, strict=True)] == expected_removed
        assert [b - a for a, b in zip(active, grown, strict=True)] == expected_added
    else:
        assert sum(active) - sum(pruned_m) == min(count, sum(active))
        assert sum(active) - sum(pruned_r) == min(count, sum(active))
        assert sum(grown) - sum(active) == min(count, sum(inactive))


def test_operators_jit_and_vmap():
    params = jax.vmap(SPEC.init)(jax.random.split(jax.random.key(0), 6))
    masks = jax.vmap(lambda p: SPEC.full_masks(p))(params)
    fn = jax.jit(jax.vmap(lambda p, m, a: P.prune_magnitude(p, m, MASKABLE, a)))
    out = fn(params, masks, jnp.linspace(0.0, 1.0, 6))
    counts = np.asarray(jax.vmap(lambda m: M.count_active(m, MASKABLE))(out))
    np.testing.assert_array_equal(counts, [35, 28, 21, 14, 7, 0])
