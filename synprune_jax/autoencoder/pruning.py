"""Activation-guided and random pruning operators for one autoencoder (pure, jittable).

Every operator returns a *keep* pytree shaped like the parameters (float32 0/1, one leaf per
kernel and bias); :func:`apply_keep` zeroes the pruned parameters and, in persistent mode, folds
the keep pytree into the network's mask so they stay zero during later training. The operators
(``variance``, ``conjunctive``, ``random``) are described in ``docs/autoencoder.md``.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from synprune_jax.autoencoder.model import LAYERS, reconstruct
from synprune_jax.masks import exact_count_mask

OPERATORS = ("none", "random", "variance", "conjunctive")
NETWORKS = ("encoder", "decoder")


def check_operator(name: str) -> None:
    if name not in OPERATORS:
        raise ValueError(f"unknown pruning operator {name!r}; valid: {list(OPERATORS)}")


# ---------------------------------------------------------------------------------------------
# Recorded activations: running sums over forward passes of equal batch size.


def init_stats(params: dict, batch_size: int) -> dict:
    """Zeroed accumulators ``{network: {layer: {"count": [], "sum": [B, u], "sum_sq": [B, u]}}}``
    for the autoencoder ``params`` (no leading axis) and passes of ``batch_size`` samples."""

    def entry(units):
        return {
            "count": jnp.zeros((), jnp.float32),
            "sum": jnp.zeros((batch_size, units), jnp.float32),
            "sum_sq": jnp.zeros((batch_size, units), jnp.float32),
        }

    return {
        network: {layer: entry(params[network][layer]["bias"].shape[0]) for layer in LAYERS}
        for network in NETWORKS
    }


def accumulate_stats(stats: dict, recorded: dict) -> dict:
    """Adds one forward pass: ``recorded = {network: (a0 [B, u0], a1 [B, u1])}``."""

    def add(entry, values):
        values = jax.lax.stop_gradient(values).astype(jnp.float32)
        return {
            "count": entry["count"] + 1.0,
            "sum": entry["sum"] + values,
            "sum_sq": entry["sum_sq"] + values * values,
        }

    return {
        network: {
            layer: add(stats[network][layer], values)
            for layer, values in zip(LAYERS, recorded[network], strict=True)
        }
        for network in NETWORKS
    }


def variance_scores(entry: dict) -> jax.Array:
    """``[units]``: sum over batch positions of the (population) std over recorded passes."""
    count = jnp.maximum(entry["count"], 1.0)
    mean = entry["sum"] / count
    variance = jnp.maximum(entry["sum_sq"] / count - mean * mean, 0.0)
    return jnp.sum(jnp.sqrt(variance), axis=0)


# ---------------------------------------------------------------------------------------------
# Per-layer operators.


def variance_keep_probability(scores: jax.Array) -> jax.Array:
    """``[units]``: ``(max s - s_j) / (max s - min s)``, or 1 when all scores are equal."""
    spread = jnp.max(scores) - jnp.min(scores)
    safe = jnp.where(spread > 0, spread, 1.0)
    return jnp.where(spread > 0, (jnp.max(scores) - scores) / safe, 1.0)


def variance_keep(key: jax.Array, layer: dict, scores: jax.Array) -> dict:
    """Keep pytree for one layer (``kernel [in, out]``, ``bias [out]``) from unit scores
    ``[out]``: each entry of unit ``j`` is kept with :func:`variance_keep_probability`."""
    probability = variance_keep_probability(scores)
    kernel_key, bias_key = jax.random.split(key)
    kernel = jax.random.uniform(kernel_key, layer["kernel"].shape) < probability[None, :]
    bias = jax.random.uniform(bias_key, layer["bias"].shape) < probability
    return {"kernel": kernel.astype(jnp.float32), "bias": bias.astype(jnp.float32)}


def conjunctive_units(activations: jax.Array, threshold) -> jax.Array:
    """Units selected for pruning by the conjunctive (lexicase-like) filter.

    Args:
        activations: ``[C, units]``, one row per case, in the order the cases were drawn.
        threshold: ``theta``; a unit is marked in a case when its min-max normalised activation
            is below it (a case whose activations are all equal marks nothing).

    Returns:
        ``[units]`` bool: the marked set of case 0, intersected with the marked sets of the
        following cases one by one until at most one unit is left (so a result with a single
        unit, or none, is possible).
    """
    low = jnp.min(activations, axis=1, keepdims=True)
    spread = jnp.max(activations, axis=1, keepdims=True) - low
    safe = jnp.where(spread > 0, spread, 1.0)
    marked = jnp.where(spread > 0, (activations - low) / safe < threshold, False)

    def body(selected, case_marked):
        go_on = jnp.sum(selected) > 1
        return jnp.where(go_on, selected & case_marked, selected), None

    selected, _ = jax.lax.scan(body, marked[0], marked[1:])
    return selected


def conjunctive_keep(layer: dict, units: jax.Array) -> dict:
    """Keep pytree zeroing the incoming weights and bias of ``units`` (``[out]`` bool)."""
    keep = (~units).astype(jnp.float32)
    return {"kernel": jnp.broadcast_to(keep[None, :], layer["kernel"].shape), "bias": keep}


def random_keep_tensor(key: jax.Array, shape: tuple[int, ...], amount) -> jax.Array:
    """float32 0/1 of ``shape`` with exactly ``round(amount * size)`` zeros at uniformly random
    places (:func:`synprune_jax.masks.exact_count_mask` marks the zeros)."""
    count = jnp.round(jnp.asarray(amount, jnp.float32) * math.prod(shape)).astype(jnp.int32)
    return (~exact_count_mask(key, shape, count)).astype(jnp.float32)


def random_keep(key: jax.Array, tree: dict, amount) -> dict:
    """:func:`random_keep_tensor` for every leaf of ``tree``."""
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    keys = jax.random.split(key, len(leaves))
    return jax.tree_util.tree_unflatten(
        treedef,
        [random_keep_tensor(k, leaf.shape, amount) for k, leaf in zip(keys, leaves, strict=True)],
    )


# ---------------------------------------------------------------------------------------------
# Whole autoencoder.


def prune_keep(
    key: jax.Array,
    operator: str,
    params: dict,
    *,
    stats: dict | None = None,
    cases: jax.Array | None = None,
    amount=0.1,
    threshold=0.1,
    activation_point: str = "post_relu",
) -> dict:
    """Keep pytree (float32 0/1, shaped like ``params``) of one application of ``operator``.

    Args:
        key: PRNG key.
        operator: one of :data:`OPERATORS` (static).
        params: one autoencoder ``{"encoder": ..., "decoder": ...}``.
        stats: accumulators from :func:`accumulate_stats` (``variance``).
        cases: ``[C, d]`` inputs for ``conjunctive``.
        amount: fraction per tensor for ``random``.
        threshold: ``theta`` for ``conjunctive``.
        activation_point: recorded activations for ``conjunctive`` (see the model module).
    """
    check_operator(operator)
    if operator == "none":
        return jax.tree_util.tree_map(jnp.ones_like, params)
    if operator == "random":
        return random_keep(key, params, amount)
    keys = jax.random.split(key, len(NETWORKS) * len(LAYERS)).reshape(len(NETWORKS), len(LAYERS))
    if operator == "variance":
        if stats is None:
            raise ValueError("the variance operator needs recorded activation stats")
        return {
            network: {
                layer: variance_keep(
                    keys[i, j], params[network][layer], variance_scores(stats[network][layer])
                )
                for j, layer in enumerate(LAYERS)
            }
            for i, network in enumerate(NETWORKS)
        }
    if cases is None:
        raise ValueError("the conjunctive operator needs cases")
    _, recorded = reconstruct(params, cases, activation_point)  # [C, units] per layer
    return {
        network: {
            layer: conjunctive_keep(
                params[network][layer], conjunctive_units(recorded[network][j], threshold)
            )
            for j, layer in enumerate(LAYERS)
        }
        for network in NETWORKS
    }


def apply_keep(params: dict, masks: dict, keep: dict, persistent: bool, do_prune) -> tuple:
    """Applies ``keep`` when ``do_prune`` (bool scalar, traced allowed).

    Returns:
        ``(params, masks)``: pruned entries set to zero; in persistent mode ``masks *= keep`` (the
        training step multiplies parameters by the mask after every update), otherwise the masks
        are returned unchanged (all ones) and the zeroed weights stay trainable.
    """
    keep = jax.tree_util.tree_map(lambda k: jnp.where(do_prune, k, 1.0), keep)
    params = jax.tree_util.tree_map(lambda p, k: p * k, params, keep)
    if persistent:
        masks = jax.tree_util.tree_map(lambda m, k: m * k, masks, keep)
    return params, masks
