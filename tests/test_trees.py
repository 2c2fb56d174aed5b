"""Tests for the shared pytree helpers (synprune_jax.trees)."""

import jax
import jax.numpy as jnp
import numpy as np

from synprune_jax import trees


def test_select_scalar_and_per_row():
    new = {"w": jnp.ones((3, 2)), "b": jnp.full((3,), 5.0)}
    old = {"w": jnp.zeros((3, 2)), "b": jnp.zeros((3,))}
    picked = trees.select(jnp.array([True, False, True]), new, old)
    np.testing.assert_array_equal(picked["w"], [[1, 1], [0, 0], [1, 1]])
    np.testing.assert_array_equal(picked["b"], [5, 0, 5])
    whole = trees.select(jnp.asarray(False), new, old)
    np.testing.assert_array_equal(whole["w"], np.zeros((3, 2)))


def test_strong_types_drops_weak_types():
    weak = {"x": jnp.asarray(1.0) * 2}  # Python scalar -> weakly typed
    assert jax.tree_util.tree_leaves(weak)[0].weak_type
    assert not jax.tree_util.tree_leaves(trees.strong_types(weak))[0].weak_type


def test_fingerprint_sees_values_shapes_dtypes_and_structure():
    base = trees.fingerprint({"a": np.arange(4, dtype=np.int32)})
    assert base == trees.fingerprint({"a": jnp.arange(4, dtype=jnp.int32)})
    for other in (
        {"a": np.arange(1, 5, dtype=np.int32)},
        {"a": np.arange(4, dtype=np.int32).reshape(2, 2)},
        {"a": np.arange(4, dtype=np.int64)},
        {"b": np.arange(4, dtype=np.int32)},
    ):
        assert trees.fingerprint(other) != base
