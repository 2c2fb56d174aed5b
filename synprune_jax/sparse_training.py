"""Gradient-based pruning: mask updates for networks trained by gradient descent.

The methods of Graesser, Evci, Elsen and Castro, "The State of Sparse Training in Deep
Reinforcement Learning" (ICML 2022), as pure functions on the same boolean masks the evolutionary
methods evolve (:mod:`synprune_jax.masks`; kernels are maskable, biases are not):

* ``"gmp"`` — gradual magnitude pruning (Zhu & Gupta 2017): dense at first; every
  ``update_every`` iterations between ``start`` and ``end`` each layer ``l`` keeps the
  ``round(d_l(t) * n_l)`` largest ``|w|`` of its active weights, with the cubic schedule
  ``d_l(t) = d_l + (1 - d_l) * (1 - (t - start) / (end - start)) ** 3`` (never regrows);
* ``"static"`` — a random mask drawn once at initialisation, ``round(d_l * n_l)`` connections
  in layer ``l``, never changed;
* ``"set"`` — sparse evolutionary training (Mocanu et al. 2018): a static-like random mask, then
  every ``update_every`` iterations before ``update_end`` each layer drops the
  ``round(f(t) * active_l)`` smallest ``|w|`` and grows as many connections at random among
  those inactive after the drop;
* ``"rigl"`` — as SET, but grows the inactive connections with the largest ``|gradient|`` of the
  loss with respect to the (dense) effective weights (Evci et al. 2020).

``f(t) = drop_fraction * (1 + cos(pi * t / update_end)) / 2`` (cosine decay). A grown
connection starts at zero (the weight of a pruned connection is kept at zero by the trainer), so
SET and RigL keep every layer's count exactly constant while changing which connections exist.

The per-layer target densities ``d_l`` come from ``distribution``: ``"uniform"`` (every layer at
the target density) or ``"erk"`` (Erdős–Rényi-Kernel: ``d_l`` proportional to
``(n_in + n_out) / (n_in * n_out)``, capped at 1, scaled so the kernel weights in all add up to
the target density; :func:`erk_densities`).

Examples:
    >>> from synprune_jax.networks import MLPSpec
    >>> spec = MLPSpec(input_size=11, hidden_sizes=(16, 16), output_size=3)
    >>> [round(float(d), 3) for d in erk_densities(spec, 0.25)]  # the small last layer: denser
    [0.236, 0.192, 0.609]
    >>> layer_counts(spec, 0.25, "uniform").tolist()  # round(0.25 * n_l): 176, 256, 48 weights
    [44, 64, 12]
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from synprune_jax.masks import exact_count_mask
from synprune_jax.networks import MLPSpec
from synprune_jax.pruning import select_lowest
from synprune_jax.types import Masks, Params

METHODS = ("none", "gmp", "static", "set", "rigl")
DISTRIBUTIONS = ("uniform", "erk")


def _kernel_shapes(spec: MLPSpec) -> list[tuple[int, int]]:
    sizes = spec.layer_sizes
    return list(zip(sizes[:-1], sizes[1:], strict=True))


def erk_densities(spec: MLPSpec, density) -> jax.Array:
    """Erdős–Rényi-Kernel per-layer densities ``[L]`` for an overall kernel ``density``.

    ``d_l = min(1, eps * (n_in + n_out) / (n_in * n_out))`` with ``eps`` chosen so that
    ``sum_l d_l * n_l = density * sum_l n_l`` (``n_l = n_in * n_out``); layers that would exceed 1
    are made dense and ``eps`` is solved again over the rest (``L`` rounds suffice).
    ``density`` may be traced.

    Examples:
        >>> spec = MLPSpec(input_size=2, hidden_sizes=(64,), output_size=1)
        >>> [round(float(d), 3) for d in erk_densities(spec, 0.5)]
        [0.378, 0.744]
        >>> [round(float(d), 3) for d in erk_densities(spec, 0.9)]  # the last layer capped at 1
        [0.85, 1.0]
    """
    shapes = _kernel_shapes(spec)
    sizes = jnp.asarray([a * b for a, b in shapes], jnp.float32)
    raw = jnp.asarray([(a + b) / (a * b) for a, b in shapes], jnp.float32)
    wanted = jnp.asarray(density, jnp.float32) * jnp.sum(sizes)
    dense = jnp.zeros(sizes.shape, jnp.bool_)
    for _ in range(len(shapes)):
        left = wanted - jnp.sum(jnp.where(dense, sizes, 0.0))
        scale = left / jnp.maximum(jnp.sum(jnp.where(dense, 0.0, raw * sizes)), 1e-12)
        dense = dense | (scale * raw > 1.0)
    left = wanted - jnp.sum(jnp.where(dense, sizes, 0.0))
    scale = left / jnp.maximum(jnp.sum(jnp.where(dense, 0.0, raw * sizes)), 1e-12)
    return jnp.clip(jnp.where(dense, 1.0, scale * raw), 0.0, 1.0)


def layer_densities(spec: MLPSpec, density, distribution: str) -> jax.Array:
    """Per-layer densities ``[L]`` of ``distribution`` (``"uniform"`` or ``"erk"``)."""
    if distribution == "uniform":
        return jnp.full((spec.num_layers,), jnp.asarray(density, jnp.float32))
    if distribution == "erk":
        return erk_densities(spec, density)
    raise ValueError(f"unknown density distribution {distribution!r}; valid: {DISTRIBUTIONS}")


def counts_of(spec: MLPSpec, densities: jax.Array) -> jax.Array:
    """int32 ``[L]``: ``round(d_l * n_l)`` connections of each kernel for densities ``[L]``."""
    sizes = jnp.asarray([a * b for a, b in _kernel_shapes(spec)], jnp.float32)
    return jnp.round(densities * sizes).astype(jnp.int32)


def layer_counts(spec: MLPSpec, density, distribution: str) -> jax.Array:
    """int32 ``[L]``: the connections each kernel keeps at ``density`` (see module docstring)."""
    return counts_of(spec, layer_densities(spec, density, distribution))


def gmp_densities(spec: MLPSpec, density, distribution: str, iteration, start: int, end: int):
    """Per-layer densities ``[L]`` of the cubic schedule at ``iteration`` (may be traced)."""
    final = layer_densities(spec, density, distribution)
    progress = jnp.clip(
        (jnp.asarray(iteration, jnp.float32) - start) / max(end - start, 1), 0.0, 1.0
    )
    return final + (1.0 - final) * (1.0 - progress) ** 3


def drop_fraction_at(drop_fraction, iteration, update_end: int) -> jax.Array:
    """Cosine-decayed drop fraction ``drop_fraction * (1 + cos(pi * t / update_end)) / 2``."""
    progress = jnp.clip(jnp.asarray(iteration, jnp.float32) / max(update_end, 1), 0.0, 1.0)
    return jnp.asarray(drop_fraction, jnp.float32) * 0.5 * (1.0 + jnp.cos(math.pi * progress))


def random_masks(key: jax.Array, spec: MLPSpec, params: Params, counts: jax.Array) -> Masks:
    """Masks with exactly ``counts[l]`` connections at random places in kernel ``l`` (biases
    all True); ``counts`` may be traced."""
    keys = jax.random.split(key, spec.num_layers)
    kernels = [
        exact_count_mask(keys[i], kernel.shape, counts[i])
        for i, kernel in enumerate(spec.kernels(params))
    ]
    full = jax.tree_util.tree_map(lambda p: jnp.ones(p.shape, jnp.bool_), params)
    return spec.replace_kernels(full, kernels)


def keep_largest(spec: MLPSpec, scores: Params, masks: Masks, counts: jax.Array) -> Masks:
    """Prunes each kernel to at most ``counts[l]`` connections, removing the active ones with the
    smallest score (ties: the lower index first); never regrows."""
    kernels = []
    for i, (score, mask) in enumerate(zip(spec.kernels(scores), spec.kernels(masks), strict=True)):
        flat = mask.reshape(-1)
        remove = jnp.maximum(jnp.sum(flat, dtype=jnp.int32) - counts[i], 0)
        chosen = select_lowest(score.reshape(-1), flat, remove)
        kernels.append((flat & ~chosen).reshape(mask.shape))
    return spec.replace_kernels(masks, kernels)


def drop_and_grow(
    key: jax.Array,
    spec: MLPSpec,
    params: Params,
    masks: Masks,
    fraction,
    grow_scores: Params | None,
) -> Masks:
    """One SET / RigL update: in every kernel drop ``round(fraction * active)`` active connections
    with the smallest ``|w|``, then grow as many among the inactive ones (after the drop): those
    with the largest ``grow_scores`` (RigL: ``|gradient|``), or at random when ``grow_scores``
    is ``None`` (SET). Each kernel keeps its count.

    Examples:
        >>> spec = MLPSpec(input_size=2, hidden_sizes=(), output_size=2)
        >>> params = {"params": {"Dense_0": {"kernel": jnp.array([[0.1, 0.5], [0.0, 0.0]]),
        ...                                  "bias": jnp.zeros(2)}}}
        >>> masks = {"params": {"Dense_0": {"kernel": jnp.array([[True, True], [False, False]]),
        ...                                 "bias": jnp.ones(2, bool)}}}
        >>> grads = jax.tree.map(jnp.zeros_like, params)
        >>> grads["params"]["Dense_0"]["kernel"] = jnp.array([[0.0, 0.0], [0.0, 9.0]])
        >>> new = drop_and_grow(jax.random.key(0), spec, params, masks, 0.5, grads)
        >>> new["params"]["Dense_0"]["kernel"].tolist()  # 0.1 dropped, the 9.0 gradient grown
        [[False, True], [False, True]]
    """
    if grow_scores is None:
        grow_scores = jax.tree_util.tree_map(
            lambda p, k: jax.random.uniform(k, p.shape),
            params,
            _split_like(key, params),
        )
    kernels = []
    fraction = jnp.asarray(fraction, jnp.float32)
    for weight, grow, mask in zip(
        spec.kernels(params), spec.kernels(grow_scores), spec.kernels(masks), strict=True
    ):
        flat = mask.reshape(-1)
        count = jnp.round(fraction * jnp.sum(flat, dtype=jnp.int32)).astype(jnp.int32)
        dropped = flat & ~select_lowest(jnp.abs(weight).reshape(-1), flat, count)
        grown = select_lowest(-jnp.abs(grow).reshape(-1), ~dropped, count)
        kernels.append((dropped | grown).reshape(mask.shape))
    return spec.replace_kernels(masks, kernels)


def _split_like(key: jax.Array, tree) -> object:
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    return jax.tree_util.tree_unflatten(treedef, list(jax.random.split(key, len(leaves))))


__all__ = [
    "DISTRIBUTIONS",
    "METHODS",
    "counts_of",
    "drop_and_grow",
    "drop_fraction_at",
    "erk_densities",
    "gmp_densities",
    "keep_largest",
    "layer_counts",
    "layer_densities",
    "random_masks",
]
