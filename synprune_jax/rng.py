"""Per-leaf random draws with few ``jax.random`` calls (same numbers, less XLA compile time).

Drawing one array per parameter leaf, each from its own key, inlines one Threefry hash per leaf,
and XLA's compile time grows with the number of hashes. :func:`leafwise` returns exactly the
same arrays, bit for bit, while drawing each *group* of leaves with one vmapped call; the padded
``[group, largest leaf]`` draw costs scratch memory, so the per-generation operators
(:func:`synprune_jax.variation.gaussian_mutation`, :func:`synprune_jax.pruning.flip_mutation`)
keep one call per leaf and :func:`leafwise` draws the initial masks
(:func:`synprune_jax.masks.init_masks`). Measurements: ``docs/benchmarks.md`` ("Design
figures", ``benchmarks/rng_compile.py``).

Why the numbers do not change. With ``jax_threefry_partitionable`` on (the default since JAX
0.5), Threefry hashes each element's row-major linear index under the key, independently of the
requested shape. Hence, for samplers built on ``random_bits`` element by element (``normal``,
``uniform``, ``bernoulli`` in its default ``mode="low"``), ``sampler(k, shape)`` equals
``sampler(k, (prod(shape),)).reshape(shape)`` and ``sampler(k, (n,))[:m]`` equals
``sampler(k, (m,))`` for ``m <= n``. With the flag off, or a PRNG implementation other than
``threefry2x32``, this does not hold and :func:`leafwise` falls back to one call per leaf.
Samplers that are not elementwise (``permutation``, ``gamma`` / ``beta``,
``bernoulli(mode="high")``, ...) must not go through :func:`leafwise`.

Leaves are grouped by size so that a group's padded count stays at most ``max_waste`` times its
useful count (:func:`group_leaves`).

Arithmetic on the draws. The draws are bit-identical, but XLA may simplify the program around
them differently: ``sigma * jax.random.normal(...)`` can differ by 1 ulp from scaling a slice of
a batched draw. Do such arithmetic inside the sampler
(``lambda k, s, d: sigma * jax.random.normal(k, s, d)``), and give one-element leaves their own
call (under ``vmap`` a batched ``sigma`` is not broadcast onto them). Comparisons are exact.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

#: PRNG implementations whose draws are row-major and prefix-stable under the partitionable flag.
PREFIX_STABLE_IMPLS = ("threefry2x32",)


def group_leaves(
    sizes: Sequence[int], max_waste: float = 2.0, labels: Sequence[Hashable] | None = None
) -> list[list[int]]:
    """Groups leaf indices for batched draws, bounding the padding waste.

    Leaves with different ``labels`` never share a group. Within a label, leaves are sorted by
    size (descending, ties by index) and added greedily to the current group while
    ``len(group) * max(size) <= max_waste * sum(size)`` still holds; otherwise a new group starts.

    Args:
        sizes: number of elements of each leaf (0 allowed).
        max_waste: bound on padded / useful numbers per group, at least 1 (1 groups only leaves
            of equal size).
        labels: optional hashable label per leaf (e.g. its dtype and static sampler arguments).

    Returns:
        Groups of leaf indices; each group is sorted by decreasing size, so its first leaf is the
        largest. Every index appears exactly once.
    """
    if not max_waste >= 1.0:
        raise ValueError(f"max_waste must be >= 1, got {max_waste!r}")
    sizes = [int(size) for size in sizes]
    if labels is None:
        labels = [None] * len(sizes)
    if len(labels) != len(sizes):
        raise ValueError(f"{len(labels)} labels for {len(sizes)} leaves")
    by_label: dict[Hashable, list[int]] = {}
    for index, label in enumerate(labels):
        by_label.setdefault(label, []).append(index)
    groups = []
    for indices in by_label.values():
        group: list[int] = []
        total = 0
        for index in sorted(indices, key=lambda i: (-sizes[i], i)):
            size = sizes[index]
            if group and (len(group) + 1) * sizes[group[0]] <= max_waste * (total + size):
                group.append(index)
                total += size
                continue
            if group:
                groups.append(group)
            group, total = [index], size
        if group:
            groups.append(group)
    return groups


def prefix_stable(key: jax.Array) -> bool:
    """Whether draws from ``key`` are row-major and prefix-stable (so :func:`leafwise` batches).

    True when ``jax_threefry_partitionable`` is on and the key's PRNG implementation (the default
    implementation for a raw ``uint32`` key) is ``threefry2x32``.
    """
    # jax.config defines its flags at run time (the type checker cannot see them)
    if not jax.config.jax_threefry_partitionable:  # type: ignore[attr-defined]
        return False
    if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
        impl = jax.random.key_impl(key)
    else:
        impl = jax.config.jax_default_prng_impl  # type: ignore[attr-defined]
    return isinstance(impl, str) and impl in PREFIX_STABLE_IMPLS


def _is_array(value: Any) -> bool:
    return isinstance(value, (jax.Array, np.ndarray))


def leafwise(
    sampler: Callable[..., jax.Array],
    keys: jax.Array | Sequence[jax.Array],
    shapes: Sequence[Sequence[int]],
    *per_leaf_args: Sequence[Any],
    max_waste: float = 2.0,
) -> list[jax.Array]:
    """``[sampler(keys[i], shapes[i], *(a[i] for a in per_leaf_args)) for each leaf i]``, batched.

    Bit-identical to those per-leaf calls (module docstring), but drawn with one vmapped
    ``sampler`` call per group of leaves (:func:`group_leaves`; a leaf alone in its group gets
    the plain call). Works under ``jit`` and ``vmap``.

    Example:
        >>> leaves = [jnp.zeros((3, 2)), jnp.zeros((5,)), jnp.zeros((2, 2))]
        >>> keys = jax.random.split(jax.random.key(0), len(leaves))
        >>> noise = leafwise(jax.random.normal, keys, [p.shape for p in leaves],
        ...                  [p.dtype for p in leaves])
        >>> [n.shape for n in noise]
        [(3, 2), (5,), (2, 2)]
        >>> bool(jnp.all(noise[1] == jax.random.normal(keys[1], (5,))))  # the per-leaf numbers
        True

    Args:
        sampler: ``sampler(key, shape, *args) -> array of shape``, elementwise in the random bits
            (``normal``, ``uniform``, ``bernoulli`` with ``mode="low"``; a lambda may reorder
            arguments, e.g. ``lambda k, s, p: jax.random.bernoulli(k, p, s)``).
        keys: one key per leaf: a key array with the leaves on its leading axis (typed keys, or
            raw ``uint32`` keys of shape ``[L, 2]``) or a sequence of keys.
        shapes: the shape of each leaf (``()`` and zero-size shapes are fine).
        *per_leaf_args: extra arguments, each a sequence with one entry per leaf. Array entries
            (``jax.Array``, tracers, ``np.ndarray``) must be scalars; they are stacked per group
            and vmapped over (a traced Bernoulli probability per leaf, say). Any other entry
            (a dtype, a Python number) is static: it must be hashable, and only leaves whose
            static entries are equal (same type, value and repr) share a group.
        max_waste: bound on padded / useful random numbers per group (at least 1).

    Returns:
        One array per leaf, in leaf order.
    """
    num = len(shapes)
    shapes = [tuple(int(dim) for dim in shape) for shape in shapes]
    key_list = [keys[i] for i in range(len(keys))] if _is_array(keys) else list(keys)
    if len(key_list) != num:
        raise ValueError(f"{len(key_list)} keys for {num} leaves")
    for position, arg in enumerate(per_leaf_args):
        if len(arg) != num:
            raise ValueError(
                f"per-leaf argument {position} has {len(arg)} entries for {num} leaves"
            )
    leaf_args = [tuple(arg[i] for arg in per_leaf_args) for i in range(num)]
    if num == 0:
        return []
    if not prefix_stable(key_list[0]):
        return [sampler(key_list[i], shapes[i], *leaf_args[i]) for i in range(num)]

    def label(args: tuple) -> tuple:
        out: list[tuple] = []
        for value in args:
            if _is_array(value):
                if value.ndim != 0:
                    raise ValueError(
                        f"array per-leaf arguments must be scalars, got shape {value.shape}"
                    )
                aval = jax.typeof(value)
                out.append(("array", aval.dtype, aval.weak_type))
            else:
                try:
                    hash(value)
                except TypeError as error:
                    raise TypeError(
                        f"static per-leaf argument {value!r} is not hashable"
                    ) from error
                # type and repr too: 1 == 1.0 == True and 0.0 == -0.0, but they draw differently
                out.append(("static", type(value), value, repr(value)))
        return tuple(out)

    sizes = [math.prod(shape) for shape in shapes]
    groups = group_leaves(sizes, max_waste, [label(args) for args in leaf_args])
    out: list[jax.Array | None] = [None] * num
    for group in groups:
        if len(group) == 1:
            (i,) = group
            out[i] = sampler(key_list[i], shapes[i], *leaf_args[i])
            continue
        padded = sizes[group[0]]
        template = leaf_args[group[0]]
        traced = [position for position, value in enumerate(template) if _is_array(value)]
        stacked = [jnp.stack([leaf_args[i][position] for i in group]) for position in traced]

        def draw(key, *values, template=template, traced=traced, padded=padded):
            args = list(template)
            for position, value in zip(traced, values, strict=True):
                args[position] = value
            return sampler(key, (padded,), *args)

        block = jax.vmap(draw)(jnp.stack([key_list[i] for i in group]), *stacked)
        for row, i in enumerate(group):
            flat = block[row] if sizes[i] == padded else block[row, : sizes[i]]
            out[i] = flat.reshape(shapes[i])
    return [array for array in out if array is not None]  # every leaf was drawn
