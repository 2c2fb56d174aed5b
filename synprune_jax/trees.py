"""Small pytree helpers used across the package (one place for each idiom).

Example:
    >>> import jax.numpy as jnp
    >>> new, old = {"w": jnp.ones((2, 3))}, {"w": jnp.zeros((2, 3))}
    >>> select(jnp.array([True, False]), new, old)["w"].sum(axis=1).tolist()
    [3.0, 0.0]
"""

from __future__ import annotations

import functools
import hashlib
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

PyTree = Any


def select(condition: jax.Array, new: PyTree, old: PyTree) -> PyTree:
    """``where(condition, new, old)`` leaf by leaf.

    Args:
        condition: a bool scalar (one choice for the whole tree) or ``[P]`` (one choice per row
            of leaves with leading axis ``P``; broadcast over their other axes).
        new: pytree taken where ``condition`` is True.
        old: pytree of the same structure and shapes, taken elsewhere.
    """
    condition = jnp.asarray(condition)

    def one(a, b):
        shaped = condition.reshape(condition.shape + (1,) * (jnp.ndim(a) - condition.ndim))
        return jnp.where(shaped, a, b)

    return jax.tree_util.tree_map(one, new, old)


def strong_types(tree: PyTree) -> PyTree:
    """Drops weak types (from Python scalars) so scan carries and compiled signatures agree."""
    return jax.tree_util.tree_map(lambda leaf: jax.lax.convert_element_type(leaf, leaf.dtype), tree)


def fingerprint(tree: PyTree) -> str:
    """SHA-1 hex digest of a pytree of arrays: structure, shapes, dtypes and bytes (host side;
    for hashing data that are constants of a compiled program).

    Example:
        >>> fingerprint({"x": np.arange(3)}) == fingerprint({"x": np.arange(3)})
        True
    """
    digest = hashlib.sha1(str(jax.tree_util.tree_structure(tree)).encode())
    for leaf in jax.tree_util.tree_leaves(tree):
        array = np.ascontiguousarray(np.asarray(jax.device_get(leaf)))
        digest.update(f"{array.shape}{array.dtype}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


class EqualByData:
    """Value equality for an algorithm of a static ``config`` plus arrays (``data_arrays()``):
    equal when the configs are equal and the arrays are the same objects or hold the same bytes
    (:func:`fingerprint`, computed once); hashes accordingly, so sweeps group such algorithms and
    the runner reuses their programs. Use with ``@dataclasses.dataclass(eq=False)``.
    """

    config: Any  # the subclass's static settings (a dataclass field)

    def data_arrays(self) -> tuple:
        raise NotImplementedError

    def __eq__(self, other):
        if type(other) is not type(self):
            return NotImplemented
        # trees of other sizes are unequal anyway (the fingerprints differ): no strict check
        same = all(a is b for a, b in zip(self.data_arrays(), other.data_arrays(), strict=False))
        return self.config == other.config and (same or self.fingerprint == other.fingerprint)

    def __hash__(self):
        return hash((type(self).__name__, self.config, self.fingerprint))

    @functools.cached_property
    def fingerprint(self) -> str:
        """:func:`fingerprint` of ``data_arrays()``."""
        return fingerprint(tuple(self.data_arrays()))
