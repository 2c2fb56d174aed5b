"""Pruning and regrowth operators on one individual's masks (vmap for a population).

Every exact-k operator selects exactly ``min(k, candidates)`` connections, ordering candidates
by a score and breaking ties by flat index (lower index first). ``scope="layer"`` applies the
operator to each maskable leaf separately (k computed per leaf); ``scope="global"`` ranks all
maskable connections of the network together.

Amounts are fractions of the *current candidates* (active connections for pruning, inactive ones
for regrowth): ``k = floor(amount * candidates)``. Counts may be traced.

Example:
    >>> import jax, jax.numpy as jnp
    >>> params = {"w": jnp.array([0.3, -0.1, 0.2, 0.1])}
    >>> masks = {"w": jnp.array([True, True, True, True])}
    >>> prune_magnitude(params, masks, {"w": True}, 0.5)["w"].tolist()  # |-0.1| and |0.1| tie: both go
    [True, False, True, False]
"""

from __future__ import annotations

from typing import Literal

import jax
import jax.numpy as jnp

from synprune_jax.types import Masks, Params, PyTree

Scope = Literal["layer", "global"]
SCOPES = ("layer", "global")


def select_lowest(scores: jax.Array, candidates: jax.Array, count: jax.Array) -> jax.Array:
    """Marks exactly ``min(count, sum(candidates))`` candidates with the lowest scores.

    Args:
        scores: ``[N]`` float scores.
        candidates: ``[N]`` bool, which entries may be selected.
        count: int scalar (may be traced).

    Returns:
        ``[N]`` bool selection. Ties are broken by index (lower first); NaN scores sort last.
    """
    index = jnp.arange(scores.shape[0])
    scores = jnp.where(jnp.isnan(scores), jnp.inf, scores)
    order = jnp.lexsort((index, scores, ~candidates))  # last key is primary
    ranks = jnp.zeros_like(index).at[order].set(index)
    return candidates & (ranks < count)


def _check_scope(scope: str) -> None:
    if scope not in SCOPES:
        raise ValueError(f"unknown scope {scope!r}; valid: {SCOPES}")


def _apply_selection(masks: Masks, maskable: PyTree, scores: PyTree, candidate_fn, amount, count,
                     scope: str, *, remove: bool) -> Masks:
    """Shared machinery: select lowest-score candidates per leaf or globally, then flip them."""
    _check_scope(scope)
    if (amount is None) == (count is None):
        raise ValueError("give exactly one of amount (fraction) or count (exact number)")
    leaves, treedef = jax.tree_util.tree_flatten(masks)
    score_leaves = jax.tree_util.tree_leaves(scores)
    flags = jax.tree_util.tree_leaves(maskable)
    picked = [i for i, flag in enumerate(flags) if flag]

    def k_of(candidates):
        if count is not None:
            return jnp.asarray(count, jnp.int32)
        total = jnp.sum(candidates, dtype=jnp.int32)
        return jnp.floor(jnp.asarray(amount, jnp.float32) * total).astype(jnp.int32)

    out = list(leaves)
    if scope == "layer":
        for i in picked:
            flat = leaves[i].reshape(-1)
            candidates = candidate_fn(flat)
            chosen = select_lowest(score_leaves[i].reshape(-1), candidates, k_of(candidates))
            out[i] = (flat & ~chosen if remove else flat | chosen).reshape(leaves[i].shape)
    else:
        flat = jnp.concatenate([leaves[i].reshape(-1) for i in picked])
        flat_scores = jnp.concatenate([score_leaves[i].reshape(-1) for i in picked])
        candidates = candidate_fn(flat)
        chosen = select_lowest(flat_scores, candidates, k_of(candidates))
        new_flat = flat & ~chosen if remove else flat | chosen
        offset = 0
        for i in picked:
            size = leaves[i].size
            out[i] = new_flat[offset:offset + size].reshape(leaves[i].shape)
            offset += size
    return jax.tree_util.tree_unflatten(treedef, out)


def prune_magnitude(params: Params, masks: Masks, maskable: PyTree, amount=None, *, count=None,
                    scope: Scope = "layer") -> Masks:
    """Removes the active connections with the smallest ``|w|`` (exact k, ties by index).

    Args:
        params: one individual's parameters.
        masks: its boolean masks.
        maskable: pytree of bools (which leaves are maskable).
        amount: fraction of active connections to remove (``k = floor(amount * active)``).
        count: exact number to remove instead of ``amount``.
        scope: ``"layer"`` (k per maskable leaf) or ``"global"`` (one ranking over all leaves).
    """
    scores = jax.tree_util.tree_map(jnp.abs, params)
    return _apply_selection(masks, maskable, scores, lambda m: m, amount, count, scope, remove=True)


def prune_random(key: jax.Array, masks: Masks, maskable: PyTree, amount=None, *, count=None,
                 scope: Scope = "layer") -> Masks:
    """Removes exactly k uniformly chosen active connections (same k rules as magnitude)."""
    scores = _uniform_like(key, masks)
    return _apply_selection(masks, maskable, scores, lambda m: m, amount, count, scope, remove=True)


def regrow(key: jax.Array, params: Params, masks: Masks, maskable: PyTree, amount=None, *,
           count=None, scope: Scope = "layer", criterion: str = "random") -> Masks:
    """Restores exactly k inactive connections.

    ``criterion="random"`` picks uniformly; ``"magnitude"`` picks the largest stored ``|w|``
    (masked weights keep their last value, so this revives the strongest former synapses).
    A restored connection gets back its stored weight.
    """
    if criterion == "random":
        scores = _uniform_like(key, masks)
    elif criterion == "magnitude":
        scores = jax.tree_util.tree_map(lambda p: -jnp.abs(p), params)
    else:
        raise ValueError(f"unknown regrowth criterion {criterion!r}; valid: ('random', 'magnitude')")
    return _apply_selection(masks, maskable, scores, lambda m: ~m, amount, count, scope,
                            remove=False)


def prune_magnitude_to_density(params: Params, masks: Masks, maskable: PyTree,
                               target_density, *, scope: Scope = "layer") -> Masks:
    """Magnitude-prunes until density is at most ``target_density`` (never regrows).

    With ``scope="layer"`` each maskable leaf is brought to ``floor(target * size)`` active
    connections; with ``"global"`` the whole network is.
    """
    _check_scope(scope)
    flags = jax.tree_util.tree_leaves(maskable)
    leaves, treedef = jax.tree_util.tree_flatten(masks)
    target = jnp.asarray(target_density, jnp.float32)
    if scope == "layer":
        out = list(leaves)
        param_leaves = jax.tree_util.tree_leaves(params)
        for i, flag in enumerate(flags):
            if not flag:
                continue
            active = jnp.sum(leaves[i], dtype=jnp.int32)
            keep = jnp.floor(target * leaves[i].size).astype(jnp.int32)
            flat = leaves[i].reshape(-1)
            chosen = select_lowest(jnp.abs(param_leaves[i]).reshape(-1), flat,
                                   jnp.maximum(active - keep, 0))
            out[i] = (flat & ~chosen).reshape(leaves[i].shape)
        return jax.tree_util.tree_unflatten(treedef, out)
    total = sum(leaf.size for leaf, flag in zip(leaves, flags) if flag)
    active = sum(jnp.sum(leaf, dtype=jnp.int32) for leaf, flag in zip(leaves, flags) if flag)
    keep = jnp.floor(target * total).astype(jnp.int32)
    return prune_magnitude(params, masks, maskable, count=jnp.maximum(active - keep, 0),
                           scope="global")


def flip_mutation(key: jax.Array, masks: Masks, maskable: PyTree, p_disconnect,
                  p_connect) -> Masks:
    """Prune / reconnect flips: each active maskable connection is cut with probability
    ``p_disconnect``; each inactive one is restored with probability ``p_connect``."""
    leaves, treedef = jax.tree_util.tree_flatten(masks)
    flags = jax.tree_util.tree_leaves(maskable)
    keys = jax.random.split(key, len(leaves))
    out = []
    for leaf, flag, leaf_key in zip(leaves, flags, keys):
        if not flag:
            out.append(leaf)
            continue
        u = jax.random.uniform(leaf_key, leaf.shape)
        out.append(jnp.where(leaf, u >= p_disconnect, u < p_connect))
    return jax.tree_util.tree_unflatten(treedef, out)


def _uniform_like(key: jax.Array, tree: PyTree) -> PyTree:
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    keys = jax.random.split(key, len(leaves))
    return jax.tree_util.tree_unflatten(
        treedef, [jax.random.uniform(k, leaf.shape) for k, leaf in zip(keys, leaves)])
