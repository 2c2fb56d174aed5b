"""``synprune_jax.rng.leafwise`` draws exactly what one ``jax.random`` call per leaf draws.

Every comparison is bitwise (``assert_array_equal``): the batched draws are meant to replace the
per-leaf calls without changing any seeded result.
"""

import contextlib
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import assert_trees_equal, exact_jit

from synprune_jax import masks as M
from synprune_jax import rng
from synprune_jax.networks import MLPSpec

HOPPER = ((11, 16), (16,), (16, 16), (16,), (16, 3), (3,))  # hopper 16-16 policy
HUGE = ((300, 200), (200,), (200, 16), (16,), (16, 3), (3,))  # one layer dwarfs the rest
ODD = ((), (0,), (5,), (3, 0), (), (2, 3), (1, 1, 1))  # scalars and zero-size leaves
SHAPE_SETS = {"hopper": HOPPER, "huge": HUGE, "odd": ODD}


def _normal(key, shape, dtype):
    return jax.random.normal(key, shape, dtype)


def _uniform(key, shape, minval, maxval):
    return jax.random.uniform(key, shape, minval=minval, maxval=maxval)


def _bernoulli(key, shape, p):
    return jax.random.bernoulli(key, p, shape)


def _per_leaf(sampler, keys, shapes, *per_leaf_args):
    return [
        sampler(keys[i], shape, *(arg[i] for arg in per_leaf_args))
        for i, shape in enumerate(shapes)
    ]


def _draws(kind, keys, shapes, values, fn):
    """Per-leaf draws of ``kind`` with ``fn`` (``rng.leafwise`` or ``_per_leaf``).

    ``values`` is a traced ``[L]`` float array: the Bernoulli probabilities, or the uniform
    ``minval`` per leaf (``maxval`` is a static Python float per leaf).
    """
    n = len(shapes)
    if kind == "normal":
        return fn(_normal, keys, shapes, [jnp.float32] * n)
    if kind == "uniform":
        return fn(
            _uniform, keys, shapes, [values[i] for i in range(n)], [2.0 + (i % 2) for i in range(n)]
        )
    return fn(_bernoulli, keys, shapes, [values[i] for i in range(n)])


@contextlib.contextmanager
def _partitionable(value: bool):
    if hasattr(jax, "threefry_partitionable"):
        with jax.threefry_partitionable(value):
            yield
        return
    previous = jax.config.jax_threefry_partitionable
    jax.config.update("jax_threefry_partitionable", value)
    try:
        yield
    finally:
        jax.config.update("jax_threefry_partitionable", previous)


# ----- grouping ------------------------------------------------------------------------------


def _check_groups(sizes, groups, max_waste):
    assert sorted(i for group in groups for i in group) == list(range(len(sizes)))
    for group in groups:
        group_sizes = [sizes[i] for i in group]
        assert group_sizes == sorted(group_sizes, reverse=True)
        assert len(group) * group_sizes[0] <= max_waste * sum(group_sizes)


def test_group_leaves_hopper():
    sizes = [math.prod(shape) for shape in HOPPER]  # 176, 16, 256, 16, 48, 3
    groups = rng.group_leaves(sizes)
    assert groups == [[2, 0, 4], [1, 3, 5]]
    _check_groups(sizes, groups, 2.0)
    assert rng.group_leaves(sizes, max_waste=3.0) == [[2, 0, 4, 1, 3, 5]]


@pytest.mark.parametrize("max_waste", [1.0, 1.5, 2.0, 4.0])
def test_group_leaves_bounds_waste(max_waste):
    sizes = [math.prod(shape) for shape in HUGE + ODD]
    groups = rng.group_leaves(sizes, max_waste)
    _check_groups(sizes, groups, max_waste)
    assert len(groups) > 1
    if max_waste <= 2.0:  # the 60000-element kernel takes in at most the 3200-element one
        assert [0] in groups or ([0, 2] in groups and max_waste >= 1.9)
    sizes = [7, 3, 7, 7, 0, 3, 0]
    assert rng.group_leaves(sizes, 1.0) == [[0, 2, 3], [1, 5], [4, 6]]


def test_group_leaves_labels_and_errors():
    groups = rng.group_leaves([4, 4, 4, 4], labels=["a", "b", "a", "b"])
    assert groups == [[0, 2], [1, 3]]
    with pytest.raises(ValueError, match=">= 1"):
        rng.group_leaves([1, 2], max_waste=0.5)
    with pytest.raises(ValueError, match="labels"):
        rng.group_leaves([1, 2], labels=["a"])


# ----- leafwise == per-leaf calls ------------------------------------------------------------


@pytest.mark.parametrize("kind", ["normal", "uniform", "bernoulli"])
@pytest.mark.parametrize("shapes_name", sorted(SHAPE_SETS))
@pytest.mark.parametrize("mode", ["jit", "vmap"])
def test_leafwise_matches_per_leaf(kind, shapes_name, mode):
    shapes = SHAPE_SETS[shapes_name]
    n = len(shapes)

    def run(fn):
        def draw(key, values):
            return _draws(kind, jax.random.split(key, n), shapes, values, fn)

        if mode == "jit":
            return exact_jit(draw)(jax.random.key(7), jnp.linspace(0.1, 0.9, n))
        keys = jax.random.split(jax.random.key(7), 5)
        values = jnp.linspace(0.05, 0.95, 5 * n).reshape(5, n)
        return exact_jit(jax.vmap(draw))(keys, values)

    expected, got = run(_per_leaf), run(rng.leafwise)
    assert len(got) == n
    for shape, x, y in zip(shapes, expected, got, strict=True):
        assert y.shape == x.shape == ((5,) if mode == "vmap" else ()) + shape
        assert y.dtype == x.dtype
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_leafwise_raw_keys_and_key_sequences_eager():
    raw = jax.random.split(jax.random.PRNGKey(3), len(HOPPER))
    assert raw.dtype == jnp.uint32
    expected = _per_leaf(jax.random.uniform, raw, HOPPER)
    for keys in (raw, list(raw)):
        for x, y in zip(expected, rng.leafwise(jax.random.uniform, keys, HOPPER), strict=True):
            np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_leafwise_groups_by_dtype():
    shapes = HOPPER + ((4, 4), (2,))
    dtypes = [
        jnp.float32,
        jnp.bfloat16,
        jnp.float32,
        jnp.float16,
        jnp.bfloat16,
        jnp.float32,
        jnp.float16,
        jnp.float32,
    ]
    keys = jax.random.split(jax.random.key(11), len(shapes))
    expected = exact_jit(lambda k: _per_leaf(_normal, k, shapes, dtypes))(keys)
    got = exact_jit(lambda k: rng.leafwise(_normal, k, shapes, dtypes))(keys)
    for x, y, dtype in zip(expected, got, dtypes, strict=True):
        assert y.dtype == jnp.dtype(dtype)
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_leafwise_calls_sampler_once_per_group():
    shapes = HUGE + ODD
    sizes = [math.prod(shape) for shape in shapes]
    seen = []

    def spy(key, shape):
        seen.append(tuple(shape))
        return jax.random.normal(key, shape)

    keys = jax.random.split(jax.random.key(0), len(shapes))
    jax.eval_shape(lambda k: rng.leafwise(spy, k, shapes), keys)
    groups = rng.group_leaves(sizes)
    assert 1 < len(groups) < len(shapes)
    assert len(seen) == len(groups)
    for group in groups:  # a group draws its largest leaf's size (flat) or a single leaf's shape
        expected = shapes[group[0]] if len(group) == 1 else (sizes[group[0]],)
        assert expected in seen
    drawn = sum(len(group) * sizes[group[0]] for group in groups)
    assert sum(sizes) < drawn <= 2.0 * sum(sizes)  # the default waste bound holds overall


def test_leafwise_fallback_without_partitionable_threefry():
    keys_and_values = (jax.random.key(5), jnp.linspace(0.1, 0.9, len(HOPPER)))
    calls = []

    def counting(fn):
        def wrapped(sampler, *args):
            def spy(*sampler_args):
                calls.append(fn.__name__)
                return sampler(*sampler_args)

            return fn(spy, *args)

        wrapped.__name__ = fn.__name__
        return wrapped

    def run(fn):
        def draw(key, values):
            return _draws("bernoulli", jax.random.split(key, len(HOPPER)), HOPPER, values, fn)

        return jax.jit(draw)(*keys_and_values)

    with _partitionable(False):
        assert not jax.config.jax_threefry_partitionable
        assert not rng.prefix_stable(jax.random.key(0))
        expected = run(counting(_per_leaf))
        got = run(counting(rng.leafwise))
    assert jax.config.jax_threefry_partitionable  # restored
    assert calls.count("leafwise") == calls.count("_per_leaf") == len(HOPPER)
    for x, y in zip(expected, got, strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    batched = run(rng.leafwise)  # the partitionable layout draws other numbers
    assert any(
        (np.asarray(x) != np.asarray(y)).any() for x, y in zip(expected, batched, strict=True)
    )


def test_leafwise_fallback_for_rbg_keys():
    keys = jax.random.split(jax.random.key(2, impl="rbg"), len(HOPPER))
    assert not rng.prefix_stable(keys)
    expected = _per_leaf(jax.random.uniform, keys, HOPPER)
    for x, y in zip(expected, rng.leafwise(jax.random.uniform, keys, HOPPER), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_leafwise_argument_checks():
    keys = jax.random.split(jax.random.key(0), 2)
    assert rng.leafwise(jax.random.normal, keys[:0], []) == []
    with pytest.raises(ValueError, match="keys"):
        rng.leafwise(jax.random.normal, keys, [(2,)])
    with pytest.raises(ValueError, match="entries"):
        rng.leafwise(_bernoulli, keys, [(2,), (3,)], [0.5])
    with pytest.raises(ValueError, match="scalars"):
        rng.leafwise(_bernoulli, keys, [(2,), (2,)], [jnp.full((2,), 0.5)] * 2)


# ----- the initial masks == their old per-leaf implementation ------------------------


def _old_init_masks(key, params, maskable, density, exact=False):
    """``masks.init_masks`` as it was: one ``jax.random`` call per maskable leaf."""
    leaves, treedef = jax.tree_util.tree_flatten(params)
    flags = jax.tree_util.tree_leaves(maskable)
    num_maskable = sum(bool(f) for f in flags)
    densities = jnp.broadcast_to(jnp.asarray(density, jnp.float32), (num_maskable,))
    keys = jax.random.split(key, max(num_maskable, 1))
    out, index = [], 0
    for leaf, flag in zip(leaves, flags, strict=True):
        if not flag:
            out.append(jnp.ones(leaf.shape, jnp.bool_))
            continue
        if exact:
            noise = jax.random.uniform(keys[index], (leaf.size,))
            count = jnp.round(densities[index] * leaf.size).astype(jnp.int32)
            ranks = jnp.argsort(jnp.argsort(noise))
            out.append((ranks < jnp.clip(count, 0, leaf.size)).reshape(leaf.shape))
        else:
            out.append(jax.random.bernoulli(keys[index], densities[index], leaf.shape))
        index += 1
    return jax.tree_util.tree_unflatten(treedef, out)


SPEC = MLPSpec(input_size=11, output_size=3, hidden_sizes=(16, 16))  # hopper policy
BATCH = 4


def _both(old, new, *args, in_axes=0):
    """Old and new results, vmapped over BATCH individuals under jit."""
    return (
        jax.jit(jax.vmap(old, in_axes=in_axes))(*args),
        jax.jit(jax.vmap(new, in_axes=in_axes))(*args),
    )


@pytest.mark.parametrize("per_layer", [False, True])
def test_init_masks_bernoulli_matches_old(per_layer):
    params = SPEC.init(jax.random.key(0))
    maskable = SPEC.maskable()
    keys = jax.random.split(jax.random.key(5), BATCH)
    shape = (BATCH, len(SPEC.kernels(params))) if per_layer else (BATCH,)
    density = jax.random.uniform(jax.random.key(6), shape)
    old, new = _both(
        lambda k, d: _old_init_masks(k, params, maskable, d),
        lambda k, d: M.init_masks(k, params, maskable, d),
        keys,
        density,
    )
    assert_trees_equal(old, new)
    assert_trees_equal(
        _old_init_masks(keys[0], params, maskable, 0.3),
        M.init_masks(keys[0], params, maskable, 0.3),
    )


def test_init_masks_exact_matches_old():
    params = SPEC.init(jax.random.key(0))
    maskable = SPEC.maskable()
    keys = jax.random.split(jax.random.key(7), BATCH)
    density = jax.random.uniform(jax.random.key(9), (BATCH, len(SPEC.kernels(params))))
    old, new = _both(
        lambda k, d: _old_init_masks(k, params, maskable, d, exact=True),
        lambda k, d: M.init_masks(k, params, maskable, d, exact=True),
        keys,
        density,
    )
    assert_trees_equal(old, new)
    # the one-leaf helper draws the same mask as the batched path for the first kernel
    leaf_keys = jax.random.split(keys[0], len(SPEC.kernels(params)))
    count = jnp.round(density[0, 0] * 11 * 16).astype(jnp.int32)
    first = jax.tree_util.tree_leaves(jax.tree_util.tree_map(lambda m: m[0], new))[1]
    assert first.shape == (11, 16)
    np.testing.assert_array_equal(
        np.asarray(M.exact_count_mask(leaf_keys[0], (11, 16), count)), np.asarray(first)
    )
    assert int(first.sum()) == int(count)
