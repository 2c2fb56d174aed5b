import jax
import jax.numpy as jnp
import numpy as np
from conftest import assert_trees_equal

from synprune_jax import masks as M
from synprune_jax.networks import MLPSpec
from synprune_jax.types import Population
from synprune_jax.variation import (
    MutationConfig,
    MutationHyper,
    gaussian_mutation,
    mutate,
    redraw_rates,
)

SPEC = MLPSpec(input_size=6, output_size=4, hidden_sizes=(8,))


def _individual(seed=0, density=0.5):
    params = SPEC.init(jax.random.key(seed))
    masks = M.init_masks(jax.random.key(seed + 1), params, SPEC.maskable(), density, exact=True)
    return Population(params=params, masks=masks, rates=jnp.array([0.02, 0.01]))


def test_gaussian_mutation_skips_masked_weights_and_mutates_biases():
    ind = _individual()
    out = gaussian_mutation(jax.random.key(3), ind.params, ind.masks, 0.1)
    for p, q, m in zip(
        jax.tree_util.tree_leaves(ind.params),
        jax.tree_util.tree_leaves(out),
        jax.tree_util.tree_leaves(ind.masks),
        strict=True,
    ):
        p, q, m = map(np.asarray, (p, q, m))
        np.testing.assert_array_equal(p[~m], q[~m])
        assert (p[m] != q[m]).all()
    for b0, b1 in zip(SPEC.biases(ind.params), SPEC.biases(out), strict=True):
        assert (np.asarray(b0) != np.asarray(b1)).all()


def test_gaussian_mutation_scale():
    params = {"w": jnp.zeros(20000)}
    masks = {"w": jnp.ones(20000, bool)}
    out = gaussian_mutation(jax.random.key(0), params, masks, 0.3)
    assert abs(float(jnp.std(out["w"])) - 0.3) < 0.01


def test_redraw_rates_probability_and_range():
    rates = jnp.full((20000,), 0.5)
    out = np.asarray(redraw_rates(jax.random.key(0), rates, 0.25, 1e-3, 1e-1))
    redrawn = out != 0.5
    assert abs(redrawn.mean() - 0.25) < 0.02
    assert out[redrawn].min() >= 1e-3 and out[redrawn].max() <= 1e-1
    # log-uniform: the median of redrawn values is near the geometric mean 1e-2
    assert 0.008 < np.median(out[redrawn]) < 0.0125


def test_mutate_fixed_rates_and_forward_prune():
    ind = _individual(density=0.3)
    hyper = MutationHyper(sigma=0.1, p_disconnect=0.3, p_connect=0.0)
    child = mutate(
        jax.random.key(5), ind, SPEC.maskable(), MutationConfig(forward_prune=True), hyper, SPEC
    )
    np.testing.assert_allclose(child.rates, [0.3, 0.0])
    # pure pruning rates: density never rises; forward pruning leaves no output of a dead unit
    assert float(M.density(child.masks, SPEC.maskable())) <= float(
        M.density(ind.masks, SPEC.maskable())
    )
    k0, k1 = [np.asarray(k) for k in SPEC.kernels(child.masks)]
    assert not k1[~k0.any(axis=0)].any()


def test_mutate_self_adaptive_inherits_or_redraws():
    ind = _individual()
    hyper = MutationHyper(rate_redraw_probability=0.0)
    child = mutate(
        jax.random.key(5), ind, SPEC.maskable(), MutationConfig(self_adaptive=True), hyper, SPEC
    )
    np.testing.assert_allclose(child.rates, ind.rates)  # nothing redrawn: inherited
    hyper = MutationHyper(rate_redraw_probability=1.0, rate_min=0.5, rate_max=0.6)
    child = mutate(
        jax.random.key(5), ind, SPEC.maskable(), MutationConfig(self_adaptive=True), hyper, SPEC
    )
    assert ((np.asarray(child.rates) >= 0.5) & (np.asarray(child.rates) <= 0.6)).all()


def test_mutate_vmaps_over_population():
    keys = jax.random.split(jax.random.key(0), 7)
    population = jax.vmap(lambda k: _individual())(keys)
    children = jax.jit(
        jax.vmap(
            lambda k, ind: mutate(k, ind, SPEC.maskable(), MutationConfig(), MutationHyper(), SPEC)
        )
    )(keys, population)
    assert children.rates.shape == (7, 2)
    assert SPEC.kernels(children.masks)[0].shape == (7, 6, 8)


def test_random_population_densities_rates_and_forward_pruning():
    from synprune_jax.tasks.arm import KinematicArm
    from synprune_jax.variation import random_population as draw

    task = KinematicArm(genotype="mlp", hidden_sizes=(6, 5))
    maskable = task.maskable()

    def random_population(key, size, rates, **options):  # jitted: one program, not op by op
        return jax.jit(lambda k, r: draw(k, task, size, r, **options))(key, rates)

    fixed = random_population(jax.random.key(0), 32, jnp.array([0.1, 0.2]))
    assert fixed.rates.shape == (32, 2)
    np.testing.assert_array_equal(np.asarray(fixed.rates), np.tile(np.float32([0.1, 0.2]), (32, 1)))
    drawn = random_population(jax.random.key(0), 32, jnp.zeros(2), rate_range=(1e-3, 1e-1))
    assert float(drawn.rates.min()) >= 1e-3 - 1e-9 and float(drawn.rates.max()) <= 1e-1 + 1e-9
    assert len(np.unique(np.asarray(drawn.rates))) == 64  # log-uniform, one pair per network
    # the masks do not depend on the rates: same keys, same networks
    assert_trees_equal(fixed.masks, drawn.masks)
    # one density per network: every layer of a network has (up to rounding) the same density,
    # and forward pruning leaves no hidden unit with outgoing but no incoming connections
    whole = random_population(
        jax.random.key(1), 32, jnp.zeros(2), per_layer=False, forward_prune=False
    )
    kernels = [
        leaf
        for leaf, flag in zip(
            jax.tree_util.tree_leaves(whole.masks), jax.tree_util.tree_leaves(maskable), strict=True
        )
        if flag
    ]
    densities = np.stack([np.asarray(k).mean(axis=(1, 2)) for k in kernels], axis=1)
    sizes = np.array([k.shape[1] * k.shape[2] for k in kernels])
    assert np.all(np.ptp(densities, axis=1) <= 1.0 / sizes.min() + 1e-6)
    forward_prune = jax.jit(jax.vmap(lambda masks: M.forward_prune(task.spec, masks)))
    assert_trees_equal(forward_prune(fixed.masks), fixed.masks)
    unpruned = random_population(jax.random.key(0), 32, jnp.zeros(2), forward_prune=False)
    assert not all(
        np.array_equal(a, b)
        for a, b in zip(
            jax.tree_util.tree_leaves(forward_prune(unpruned.masks)),
            jax.tree_util.tree_leaves(unpruned.masks),
            strict=True,
        )
    )


def test_mutate_without_flips_equals_zero_flip_rates():
    """flips=False skips the flip draw, and the offspring are those of p_disconnect = p_connect
    = 0 bit for bit (the Gaussian key does not move); nonzero rates with flips=False and
    self-adaptive rates without flips are refused."""
    import pytest

    ind = _individual(density=0.4)
    zero = MutationHyper(sigma=0.1, p_disconnect=0.0, p_connect=0.0)
    with_flips = mutate(
        jax.random.key(7), ind, SPEC.maskable(), MutationConfig(forward_prune=False), zero, SPEC
    )
    without = mutate(
        jax.random.key(7),
        ind,
        SPEC.maskable(),
        MutationConfig(forward_prune=False, flips=False),
        zero,
        SPEC,
    )
    assert_trees_equal(with_flips, without)
    assert_trees_equal(without.masks, ind.masks)
    assert not np.array_equal(
        jax.tree_util.tree_leaves(without.params)[0], jax.tree_util.tree_leaves(ind.params)[0]
    )  # sigma still acts
    MutationConfig(flips=False).check_hyper(zero)
    with pytest.raises(ValueError, match="flips=False skips"):
        MutationConfig(flips=False).check_hyper(MutationHyper(p_connect=0.01, p_disconnect=0.0))
    with pytest.raises(ValueError, match="self-adaptive"):
        MutationConfig(self_adaptive=True, flips=False)
