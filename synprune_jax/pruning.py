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
    >>> prune_magnitude(params, masks, {"w": True}, 0.5)["w"].tolist()  # the two |w| = 0.1 go
    [True, False, True, False]
"""

from __future__ import annotations

from typing import Literal

import jax
import jax.numpy as jnp

from synprune_jax.types import Masks, Params, PyTree

Scope = Literal["layer", "global"]
SCOPES = ("layer", "global")
SCHEDULES = ("constant", "linear", "cubic")  # of :func:`scheduled_density`


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


def _count_of(amount, count):
    """``(flat mask, candidates) -> k``: ``count``, or ``floor(amount * candidates)``."""
    if (amount is None) == (count is None):
        raise ValueError("give exactly one of amount (fraction) or count (exact number)")
    if count is not None:
        return lambda flat, candidates: jnp.asarray(count, jnp.int32)
    return lambda flat, candidates: jnp.floor(
        jnp.asarray(amount, jnp.float32) * jnp.sum(candidates, dtype=jnp.int32)
    ).astype(jnp.int32)


def _apply_selection(
    masks: Masks,
    maskable: PyTree,
    scores: PyTree,
    candidate_fn,
    count_fn,
    scope: str,
    *,
    remove: bool,
) -> Masks:
    """Selects the ``count_fn(flat, candidates)`` lowest-score candidates per maskable leaf
    (``scope="layer"``) or over all of them (``"global"``), then removes or restores them."""
    if scope not in SCOPES:
        raise ValueError(f"unknown scope {scope!r}; valid: {SCOPES}")
    leaves, treedef = jax.tree_util.tree_flatten(masks)
    score_leaves = jax.tree_util.tree_leaves(scores)
    picked = [i for i, flag in enumerate(jax.tree_util.tree_leaves(maskable)) if flag]

    def flip(flat, flat_scores):
        candidates = candidate_fn(flat)
        chosen = select_lowest(flat_scores, candidates, count_fn(flat, candidates))
        return flat & ~chosen if remove else flat | chosen

    out = list(leaves)
    if scope == "layer":
        for i in picked:
            out[i] = flip(leaves[i].reshape(-1), score_leaves[i].reshape(-1)).reshape(
                leaves[i].shape
            )
    else:
        new_flat = flip(
            jnp.concatenate([leaves[i].reshape(-1) for i in picked]),
            jnp.concatenate([score_leaves[i].reshape(-1) for i in picked]),
        )
        offset = 0
        for i in picked:
            out[i] = new_flat[offset : offset + leaves[i].size].reshape(leaves[i].shape)
            offset += leaves[i].size
    return jax.tree_util.tree_unflatten(treedef, out)


def prune_magnitude(
    params: Params,
    masks: Masks,
    maskable: PyTree,
    amount=None,
    *,
    count=None,
    scope: Scope = "layer",
) -> Masks:
    """Removes the active connections with the smallest ``|w|`` (exact k, ties by index).

    Args:
        params: one individual's parameters.
        masks: its boolean masks.
        maskable: pytree of bools (which leaves are maskable).
        amount: fraction of active connections to remove (``k = floor(amount * active)``).
        count: exact number to remove instead of ``amount``.
        scope: ``"layer"`` (k per maskable leaf) or ``"global"`` (one ranking over all leaves).

    Examples:
        >>> from synprune_jax.networks import MLPSpec
        >>> spec = MLPSpec(input_size=3, hidden_sizes=(4,), output_size=2)
        >>> params = spec.init(jax.random.key(0))
        >>> maskable = spec.maskable()  # kernels True, biases False
        >>> masks = prune_magnitude(params, spec.full_masks(params), maskable, count=2)
        >>> [int(masks["params"][name]["kernel"].sum()) for name in ("Dense_0", "Dense_1")]
        [10, 6]
    """
    return _apply_selection(
        masks,
        maskable,
        jax.tree_util.tree_map(jnp.abs, params),
        lambda m: m,
        _count_of(amount, count),
        scope,
        remove=True,
    )


def prune_random(
    key: jax.Array,
    masks: Masks,
    maskable: PyTree,
    amount=None,
    *,
    count=None,
    scope: Scope = "layer",
) -> Masks:
    """Removes exactly k uniformly chosen active connections (same k rules as magnitude).

    Args:
        key: PRNG key (one uniform score per mask entry).
        masks: one individual's bool masks.
        maskable: pytree of bools (which leaves are maskable).
        amount: fraction of active connections to remove (``k = floor(amount * active)``;
            float scalar, may be traced).
        count: exact number to remove instead of ``amount`` (int scalar, may be traced).
        scope: ``"layer"`` (k per maskable leaf) or ``"global"`` (one ranking over all leaves).

    Returns:
        Bool masks of the same structure and shapes; non-maskable leaves unchanged.

    Raises:
        ValueError: not exactly one of ``amount`` and ``count`` given, or an unknown ``scope``.

    Examples:
        >>> from synprune_jax.networks import MLPSpec
        >>> spec = MLPSpec(input_size=3, hidden_sizes=(4,), output_size=2)
        >>> params = spec.init(jax.random.key(0))
        >>> maskable = spec.maskable()  # kernels True, biases False
        >>> masks = prune_random(jax.random.key(1), spec.full_masks(params), maskable, amount=0.5)
        >>> [int(masks["params"][name]["kernel"].sum()) for name in ("Dense_0", "Dense_1")]
        [6, 4]
    """
    return _apply_selection(
        masks,
        maskable,
        _uniform_like(key, masks),
        lambda m: m,
        _count_of(amount, count),
        scope,
        remove=True,
    )


def regrow(
    key: jax.Array,
    params: Params,
    masks: Masks,
    maskable: PyTree,
    amount=None,
    *,
    count=None,
    scope: Scope = "layer",
    criterion: str = "random",
) -> Masks:
    """Restores exactly k inactive connections.

    ``criterion="random"`` picks uniformly; ``"magnitude"`` picks the largest stored ``|w|``
    (masked weights keep their last value, so this revives the strongest former synapses).
    A restored connection gets back its stored weight.

    Args:
        key: PRNG key (used by ``criterion="random"``).
        params: one individual's parameters (used by ``criterion="magnitude"``).
        masks: its bool masks.
        maskable: pytree of bools (which leaves are maskable).
        amount: fraction of inactive connections to restore (``k = floor(amount * inactive)``;
            float scalar, may be traced).
        count: exact number to restore instead of ``amount`` (int scalar, may be traced).
        scope: ``"layer"`` (k per maskable leaf) or ``"global"`` (one ranking over all leaves).
        criterion: ``"random"`` or ``"magnitude"`` (static).

    Returns:
        Bool masks of the same structure and shapes; non-maskable leaves unchanged.

    Raises:
        ValueError: not exactly one of ``amount`` and ``count`` given, an unknown
            ``criterion`` or an unknown ``scope``.

    Examples:
        >>> from synprune_jax.networks import MLPSpec
        >>> spec = MLPSpec(input_size=3, hidden_sizes=(4,), output_size=2)
        >>> params = spec.init(jax.random.key(0))
        >>> maskable = spec.maskable()  # kernels True, biases False
        >>> sparse = prune_random(jax.random.key(1), spec.full_masks(params), maskable, amount=0.5)
        >>> grown = regrow(jax.random.key(2), params, sparse, maskable, count=1)
        >>> [int(grown["params"][name]["kernel"].sum()) for name in ("Dense_0", "Dense_1")]
        [7, 5]
    """
    count_fn = _count_of(amount, count)
    if criterion == "random":
        scores = _uniform_like(key, masks)
    elif criterion == "magnitude":
        scores = jax.tree_util.tree_map(lambda p: -jnp.abs(p), params)
    else:
        raise ValueError(
            f"unknown regrowth criterion {criterion!r}; valid: ('random', 'magnitude')"
        )
    return _apply_selection(masks, maskable, scores, lambda m: ~m, count_fn, scope, remove=False)


def prune_magnitude_to_density(
    params: Params, masks: Masks, maskable: PyTree, target_density, *, scope: Scope = "layer"
) -> Masks:
    """Magnitude-prunes until density is at most ``target_density``:
    :func:`prune_to_density_by_score` with scores ``|w|``.

    Args:
        params: one individual's parameters.
        masks: its bool masks.
        maskable: pytree of bools (which leaves are maskable).
        target_density: scalar in [0, 1] (may be traced).
        scope: ``"layer"`` (every maskable leaf to ``floor(target * size)``) or ``"global"``.

    Returns:
        The pruned bool masks (same structure and shapes); never regrows.

    Raises:
        ValueError: an unknown ``scope``.

    Examples:
        >>> from synprune_jax.networks import MLPSpec
        >>> spec = MLPSpec(input_size=3, hidden_sizes=(4,), output_size=2)
        >>> params = spec.init(jax.random.key(0))
        >>> maskable = spec.maskable()  # kernels True, biases False
        >>> masks = prune_magnitude_to_density(params, spec.full_masks(params), maskable, 0.25)
        >>> [int(masks["params"][name]["kernel"].sum()) for name in ("Dense_0", "Dense_1")]
        [3, 2]
    """
    scores = jax.tree_util.tree_map(jnp.abs, params)
    return prune_to_density_by_score(scores, masks, maskable, target_density, scope=scope)


def prune_to_density_by_score(
    scores: PyTree, masks: Masks, maskable: PyTree, target_density, *, scope: Scope = "layer"
) -> Masks:
    """Removes the lowest-score active connections until density <= ``target_density``.

    Exact counts with ties broken by index (:func:`select_lowest`); never regrows.
    ``scope="layer"`` brings every maskable leaf to ``floor(target * size)`` active connections;
    ``"global"`` ranks all maskable connections together and keeps ``floor(target * total)``.

    Args:
        scores: pytree shaped like ``masks`` (float; low = removed first).
        masks: boolean masks of one network.
        maskable: pytree of bools.
        target_density: scalar in [0, 1] (may be traced).
        scope: ``"layer"`` or ``"global"``.

    Returns:
        The pruned masks (same structure and shapes).

    Example:
        >>> import jax.numpy as jnp
        >>> scores = {"w": jnp.array([2.0, 2.0, 1.0, 2.0])}
        >>> masks = {"w": jnp.array([True, True, True, True])}
        >>> prune_to_density_by_score(scores, masks, {"w": True}, 0.5)["w"].tolist()
        [False, True, False, True]
    """
    target = jnp.asarray(target_density, jnp.float32)

    def count_fn(flat, candidates):
        keep = jnp.floor(target * flat.size).astype(jnp.int32)
        return jnp.maximum(jnp.sum(flat, dtype=jnp.int32) - keep, 0)

    return _apply_selection(masks, maskable, scores, lambda m: m, count_fn, scope, remove=True)


def scheduled_density(
    generation,
    *,
    schedule: str,
    current_density,
    target_density,
    prune_amount,
    start: int,
    end: int,
):
    """Density a prune at ``generation`` (completed generations) aims for (never above current).

    * ``"constant"``: ``max(target, current * (1 - prune_amount))`` (a fixed fraction per prune);
    * ``"linear"``: ``1 + (target - 1) * t``;
    * ``"cubic"``: ``target + (1 - target) * (1 - t) ** 3`` (Zhu & Gupta 2017);

    with ``t = clip((generation - start) / (end - start), 0, 1)``.

    Args:
        generation: int scalar (may be traced).
        schedule: one of :data:`SCHEDULES` (static).
        current_density: the network's density now (scalar, may be traced).
        target_density: end density of the schedules (may be traced).
        prune_amount: ``"constant"``: fraction removed per prune (may be traced).
        start: generation at which ``t`` starts (static int).
        end: generation at which ``t`` reaches 1 (static int).

    Returns:
        float32 scalar, ``<= current_density``.

    Example:
        >>> goal = scheduled_density(20, schedule="linear", current_density=1.0,
        ...                          target_density=0.2, prune_amount=0.0, start=10, end=30)
        >>> round(float(goal), 4)
        0.6
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}; valid: {SCHEDULES}")
    current = jnp.asarray(current_density, jnp.float32)
    target = jnp.asarray(target_density, jnp.float32)
    if schedule == "constant":
        goal = jnp.maximum(target, current * (1.0 - prune_amount))
    else:
        t = jnp.clip((jnp.asarray(generation, jnp.float32) - start) / max(end - start, 1), 0.0, 1.0)
        goal = (
            1.0 + (target - 1.0) * t
            if schedule == "linear"
            else target + (1.0 - target) * (1.0 - t) ** 3
        )
    return jnp.minimum(goal, current)


def flip_mutation(key: jax.Array, masks: Masks, maskable: PyTree, p_disconnect, p_connect) -> Masks:
    """Prune / reconnect flips: each active maskable connection is cut with probability
    ``p_disconnect``; each inactive one is restored with probability ``p_connect``.

    Args:
        key: PRNG key (split into one key per leaf).
        masks: one individual's bool masks.
        maskable: pytree of bools with the structure of ``masks``; only these leaves flip.
        p_disconnect: probability in [0, 1] of cutting an active connection (float scalar, may
            be traced).
        p_connect: probability in [0, 1] of restoring an inactive one (likewise).

    Returns:
        Bool masks of the same structure and shapes; non-maskable leaves unchanged.

    Raises:
        ValueError: ``maskable`` and ``masks`` have different numbers of leaves.

    Examples:
        >>> masks = {"w": jnp.ones(1000, bool)}
        >>> flipped = flip_mutation(jax.random.key(0), masks, {"w": True}, 0.1, 0.0)
        >>> 50 < int((~flipped["w"]).sum()) < 150  # about 10 % disconnected, none reconnected
        True
    """
    leaves, treedef = jax.tree_util.tree_flatten(masks)
    flags = jax.tree_util.tree_leaves(maskable)
    keys = jax.random.split(key, len(leaves))
    out = []
    for leaf, flag, leaf_key in zip(leaves, flags, keys, strict=True):
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
        treedef, [jax.random.uniform(k, leaf.shape) for k, leaf in zip(keys, leaves, strict=True)]
    )
