"""Binary masks over network parameters: initialisation, application and statistics.

Masks are boolean pytrees with exactly the structure of the parameters. ``maskable`` is a pytree
of Python bools with the same structure saying which leaves carry real masks (for an MLP: the
kernels, see :meth:`synprune_jax.networks.MLPSpec.maskable`); the masks of other leaves are all
``True`` and ignored by every statistic.

Every function here works on **one individual**; ``jax.vmap`` adds the population axis.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, NamedTuple

import jax
import jax.numpy as jnp

from synprune_jax import rng
from synprune_jax.types import Masks, Params, PyTree

if TYPE_CHECKING:  # masks take any spec with kernels(); networks imports this module
    from synprune_jax.networks import MLPSpec

_tree_map = jax.tree_util.tree_map


def _maskable_leaves(tree: PyTree, maskable: PyTree) -> list[jax.Array]:
    leaves = jax.tree_util.tree_leaves(tree)
    flags = jax.tree_util.tree_leaves(maskable)
    if len(leaves) != len(flags):
        raise ValueError(f"maskable has {len(flags)} leaves but the tree has {len(leaves)}")
    return [leaf for leaf, flag in zip(leaves, flags, strict=True) if flag]


def apply_masks(params: Params, masks: Masks) -> Params:
    """Zeroes masked-out parameters (``where``, so a masked NaN cannot leak).

    Args:
        params: parameter pytree (any leading axes, e.g. ``[P, ...]`` for a population).
        masks: bool pytree with the structure and shapes of ``params``.

    Returns:
        Pytree like ``params`` (same shapes and dtypes), zero where ``masks`` is False.

    Raises:
        ValueError: ``masks`` does not have the tree structure of ``params``.

    Examples:
        >>> params = {"w": jnp.array([1.0, -2.0, 3.0])}
        >>> apply_masks(params, {"w": jnp.array([True, False, True])})["w"]
        Array([1., 0., 3.], dtype=float32)
    """
    return _tree_map(lambda p, m: jnp.where(m, p, jnp.zeros_like(p)), params, masks)


def full_masks(params: Params) -> Masks:
    """All-``True`` masks shaped like ``params``."""
    return _tree_map(lambda p: jnp.ones(p.shape, jnp.bool_), params)


def smallest_entries(values: jax.Array, count) -> jax.Array:
    """``[n]`` bool: the ``count`` smallest of ``values`` (``[n]``, non-negative: int32 below
    ``2**30``, or float32 below 2), ties broken by index (the lower index first) — the entries
    whose rank in a stable ascending sort is below ``count`` (``count`` may be traced; clipped
    to ``[0, n]``).

    Found without sorting: a float's bit pattern orders like the float, and a 31-step bisection
    over the value range finds the ``count``-th smallest value ``t``; every entry below ``t`` is
    taken, plus the lowest-indexed entries equal to ``t`` up to ``count``.

    Example:
        >>> smallest_entries(jnp.array([3, 1, 2, 1], jnp.int32), 2).tolist()
        [False, True, False, True]
    """
    if jnp.issubdtype(values.dtype, jnp.floating):
        values = jax.lax.bitcast_convert_type(values.astype(jnp.float32), jnp.int32)
    count = jnp.clip(jnp.asarray(count, jnp.int32), 0, values.size)

    def bisect(_, bounds):  # invariant: #(v <= low) < count <= #(v <= high)
        low, high = bounds
        middle = low + (high - low) // 2
        enough = jnp.sum(values <= middle, dtype=jnp.int32) >= count
        return jnp.where(enough, low, middle), jnp.where(enough, middle, high)

    bounds = (jnp.int32(-1), jnp.max(values, initial=0).astype(jnp.int32))
    _, threshold = jax.lax.fori_loop(0, 31, bisect, bounds)
    below = values < threshold
    ties = values == threshold
    needed = count - jnp.sum(below, dtype=jnp.int32)
    chosen = below | (ties & (jnp.cumsum(ties, dtype=jnp.int32) <= needed))
    return chosen & (count > 0)


def exact_count_mask(key: jax.Array, shape: tuple[int, ...], count: jax.Array) -> jax.Array:
    """A boolean array of ``shape`` with exactly ``count`` True entries at uniformly random places
    (the ``count`` smallest of ``jax.random.uniform(key, (size,))``, ties by index).

    ``count`` may be traced; it is clipped to ``[0, size]``.
    """
    size = math.prod(shape)
    return smallest_entries(jax.random.uniform(key, (size,)), count).reshape(shape)


def init_masks(
    key: jax.Array, params: Params, maskable: PyTree, density, *, exact: bool = False
) -> Masks:
    """Random masks with a given density in every maskable leaf.

    The ``j``-th maskable leaf uses ``keys[j]`` of ``keys = jax.random.split(key, num_maskable)``.
    The Bernoulli draws and the exact-count noise are batched by
    :func:`synprune_jax.rng.leafwise` (same numbers, fewer Threefry hashes to compile).

    Args:
        key: PRNG key.
        params: one individual's parameters.
        maskable: pytree of bools (see module docstring).
        density: scalar in [0, 1] (may be traced), or a sequence with one density per maskable
            leaf in ``tree_leaves`` order.
        exact: if True each leaf keeps exactly ``round(density * size)`` connections; otherwise
            each connection survives independently with probability ``density`` (Bernoulli).

    Returns:
        Boolean masks shaped like ``params``.

    Examples:
        >>> from synprune_jax.networks import MLPSpec
        >>> spec = MLPSpec(input_size=3, hidden_sizes=(4,), output_size=2)
        >>> params = spec.init(jax.random.key(0))
        >>> maskable = spec.maskable()  # kernels True, biases False
        >>> masks = init_masks(jax.random.key(1), params, maskable, 0.5, exact=True)
        >>> int(masks["params"]["Dense_0"]["kernel"].sum()), float(density(masks, maskable))
        (6, 0.5)
    """
    leaves, treedef = jax.tree_util.tree_flatten(params)
    flags = jax.tree_util.tree_leaves(maskable)
    num_maskable = sum(bool(f) for f in flags)
    densities = jnp.broadcast_to(jnp.asarray(density, jnp.float32), (num_maskable,))
    keys = jax.random.split(key, max(num_maskable, 1))
    picked = [i for i, flag in enumerate(flags) if flag]
    leaf_keys = [keys[index] for index in range(num_maskable)]
    if exact:  # exact_count_mask's noise, drawn in batches: the same numbers
        noise = rng.leafwise(jax.random.uniform, leaf_keys, [(leaves[i].size,) for i in picked])
        drawn = [
            smallest_entries(n, jnp.round(d * leaves[i].size).astype(jnp.int32)).reshape(
                leaves[i].shape
            )
            for n, i, d in zip(noise, picked, densities, strict=True)
        ]
    else:
        drawn = rng.leafwise(
            lambda k, shape, p: jax.random.bernoulli(k, p, shape),
            leaf_keys,
            [leaves[i].shape for i in picked],
            list(densities),
        )
    out = [jnp.ones(leaf.shape, jnp.bool_) for leaf in leaves]
    for i, mask in zip(picked, drawn, strict=True):
        out[i] = mask
    return jax.tree_util.tree_unflatten(treedef, out)


def sample_layer_densities(key: jax.Array, num_layers: int, beta_a=1.0, beta_b=1.0) -> jax.Array:
    """Per-layer densities drawn i.i.d. from ``Beta(a, b)``: ``[num_layers]``.

    When ``a`` and ``b`` are the Python numbers 1 (the default), Beta(1, 1) is the uniform
    distribution and the draw is ``jax.random.uniform``: same distribution, and it compiles in a
    fraction of the time of ``jax.random.beta`` (a rejection sampler, ~2.5 s of XLA compile on
    CPU). Traced ``a``/``b`` always use ``jax.random.beta``.
    """
    if (
        isinstance(beta_a, (int, float))
        and isinstance(beta_b, (int, float))
        and float(beta_a) == 1.0
        and float(beta_b) == 1.0
    ):
        return jax.random.uniform(key, (num_layers,))
    return jax.random.beta(key, beta_a, beta_b, (num_layers,))


def init_masks_beta(
    key: jax.Array,
    params: Params,
    maskable: PyTree,
    beta_a=1.0,
    beta_b=1.0,
    *,
    exact: bool = False,
    per_layer: bool = True,
) -> Masks:
    """Random masks whose density is drawn from ``Beta(a, b)``.

    With ``per_layer=True`` (the default) every maskable leaf draws its own density, so layers of
    one network differ; the network's overall density is then an average of L draws and
    concentrates toward the Beta mean as L grows (for 3 layers and a = b = 1, under 1 % of
    networks fall below 10 % density). With ``per_layer=False`` one density is drawn per network
    and shared by its layers, so the overall density itself follows ``Beta(a, b)``.
    With ``a = b = 1`` (the default) the draws are uniform on [0, 1].

    Args:
        key: PRNG key (split into a density key and a mask key).
        params: one individual's parameters.
        maskable: pytree of bools (see module docstring).
        beta_a: Beta shape ``a`` (> 0; float scalar, may be traced).
        beta_b: Beta shape ``b`` (> 0; float scalar, may be traced).
        exact: if True each leaf keeps exactly ``round(density * size)`` connections; otherwise
            Bernoulli draws (see :func:`init_masks`).
        per_layer: one density per maskable leaf (True) or one for the whole network (False).

    Returns:
        Bool masks shaped like ``params``; non-maskable leaves all True.

    Examples:
        >>> from synprune_jax.networks import MLPSpec
        >>> spec = MLPSpec(input_size=3, hidden_sizes=(4,), output_size=2)
        >>> params = spec.init(jax.random.key(0))
        >>> maskable = spec.maskable()  # kernels True, biases False
        >>> masks = init_masks_beta(jax.random.key(1), params, maskable, exact=True)
        >>> bool(masks["params"]["Dense_0"]["bias"].all())  # biases are not maskable
        True
    """
    key_density, key_mask = jax.random.split(key)
    num_maskable = sum(bool(f) for f in jax.tree_util.tree_leaves(maskable))
    densities = sample_layer_densities(
        key_density, num_maskable if per_layer else 1, beta_a, beta_b
    )
    return init_masks(key_mask, params, maskable, densities, exact=exact)


def count_active(masks: Masks, maskable: PyTree) -> jax.Array:
    """Number of active maskable connections (int32 scalar)."""
    leaves = _maskable_leaves(masks, maskable)
    return sum((jnp.sum(leaf, dtype=jnp.int32) for leaf in leaves), jnp.zeros((), jnp.int32))


def count_maskable(masks: Masks, maskable: PyTree) -> int:
    """Number of maskable connections (static)."""
    return sum(int(leaf.size) for leaf in _maskable_leaves(masks, maskable))


def density(masks: Masks, maskable: PyTree) -> jax.Array:
    """Fraction of maskable connections that are active (float32 scalar).

    Args:
        masks: one individual's bool masks.
        maskable: pytree of bools with the structure of ``masks`` (see module docstring).

    Returns:
        float32 scalar in [0, 1]: active / total over the maskable leaves only.

    Raises:
        ValueError: ``maskable`` and ``masks`` have different numbers of leaves.

    Examples:
        >>> from synprune_jax.networks import MLPSpec
        >>> spec = MLPSpec(input_size=3, hidden_sizes=(4,), output_size=2)
        >>> params = spec.init(jax.random.key(0))
        >>> maskable = spec.maskable()  # kernels True, biases False
        >>> float(density(spec.full_masks(params), maskable))
        1.0
    """
    return count_active(masks, maskable).astype(jnp.float32) / count_maskable(masks, maskable)


# ----- MLP topology -------------------------------------------------------------------------------


def incoming_alive(kernel_mask: jax.Array) -> jax.Array:
    """``[out]`` bool: units with at least one active incoming connection (kernel ``[in, out]``)."""
    return jnp.any(kernel_mask, axis=0)


def forward_prune(spec: MLPSpec, masks: Masks) -> Masks:
    """Cuts every outgoing connection of a unit that has no incoming connection, cascading.

    Layer by layer from the input: a hidden unit whose incoming connections are all masked is
    dead; its row in the next kernel is masked, which may kill units further on. Input units are
    always alive. A dead unit still carries its bias, so forward pruning removes that constant
    contribution: it changes outputs only through units that had no inputs.

    Args:
        spec: the network (:class:`~synprune_jax.networks.MLPSpec`).
        masks: one MLP's bool masks (kernels ``[in, out]``, no population axis).

    Returns:
        Masks of the same structure, shapes and dtype; only kernel entries change (True to
        False), other leaves are returned as they are.

    Examples:
        >>> from synprune_jax.networks import MLPSpec
        >>> spec = MLPSpec(input_size=3, hidden_sizes=(4,), output_size=2)
        >>> params = spec.init(jax.random.key(0))
        >>> maskable = spec.maskable()  # kernels True, biases False
        >>> masks = spec.full_masks(params)
        >>> kernel = masks["params"]["Dense_0"]["kernel"]
        >>> masks["params"]["Dense_0"]["kernel"] = kernel.at[:, 0].set(False)  # unit 0: no input
        >>> forward_prune(spec, masks)["params"]["Dense_1"]["kernel"][0]  # so no output either
        Array([False, False], dtype=bool)
    """
    kernels = spec.kernels(masks)
    new_kernels = [kernels[0]]
    for kernel in kernels[1:]:
        alive = incoming_alive(new_kernels[-1])
        new_kernels.append(kernel & alive[:, None])
    return spec.replace_kernels(masks, new_kernels)


class MaskStats(NamedTuple):
    """Per-individual statistics of an MLP's masks (add ``[P]`` in front under vmap).

    Attributes:
        density: active / total kernel connections.
        layer_density: ``[L]`` density per kernel.
        active_synapses: int32 count of active kernel connections.
        disconnected_per_layer: ``[L]`` int32, hidden/output units of each layer with no active
            incoming connection.
        disconnected_fraction: disconnected units / all hidden and output units.
        effective_macs: multiply-adds of one forward pass that can influence an output: active
            connections whose source unit receives input (input units always do) and whose target
            unit reaches an output through active connections.
    """

    density: jax.Array
    layer_density: jax.Array
    active_synapses: jax.Array
    disconnected_per_layer: jax.Array
    disconnected_fraction: jax.Array
    effective_macs: jax.Array


def mask_statistics(spec: MLPSpec, masks: Masks) -> MaskStats:
    """Statistics of one MLP's kernel masks (jittable).

    Args:
        spec: the network (:class:`~synprune_jax.networks.MLPSpec`).
        masks: one MLP's bool masks (kernels ``[in, out]``, no population axis); bias masks
            are ignored.

    Returns:
        :class:`MaskStats`: ``density``, ``disconnected_fraction`` float32 scalars;
        ``layer_density`` ``[L]`` float32; ``active_synapses``, ``effective_macs`` int32
        scalars; ``disconnected_per_layer`` ``[L]`` int32 (``L = spec.num_layers``).

    Examples:
        >>> from synprune_jax.networks import MLPSpec
        >>> spec = MLPSpec(input_size=3, hidden_sizes=(4,), output_size=2)
        >>> params = spec.init(jax.random.key(0))
        >>> maskable = spec.maskable()  # kernels True, biases False
        >>> stats = mask_statistics(spec, spec.full_masks(params))
        >>> float(stats.density), int(stats.active_synapses), float(stats.disconnected_fraction)
        (1.0, 20, 0.0)
    """
    kernels = spec.kernels(masks)
    sizes = spec.layer_sizes
    layer_active = jnp.stack([jnp.sum(k, dtype=jnp.int32) for k in kernels])
    layer_total = jnp.asarray(
        [a * b for a, b in zip(sizes[:-1], sizes[1:], strict=True)], jnp.float32
    )
    disconnected = jnp.stack([jnp.sum(~incoming_alive(k), dtype=jnp.int32) for k in kernels])

    # Forward liveness: input units are live; a unit is live if a live unit feeds it.
    forward_live = [jnp.ones((sizes[0],), jnp.bool_)]
    for kernel in kernels:
        forward_live.append(jnp.any(kernel & forward_live[-1][:, None], axis=0))
    # Backward liveness: output units are live; a unit is live if it feeds a live unit.
    backward_live = [jnp.ones((sizes[-1],), jnp.bool_)]
    for kernel in reversed(kernels):
        backward_live.insert(0, jnp.any(kernel & backward_live[0][None, :], axis=1))
    macs = sum(
        (
            jnp.sum(k & forward_live[i][:, None] & backward_live[i + 1][None, :], dtype=jnp.int32)
            for i, k in enumerate(kernels)
        ),
        jnp.zeros((), jnp.int32),
    )
    active = jnp.sum(layer_active)
    return MaskStats(
        density=active.astype(jnp.float32) / float(spec.num_synapses),
        layer_density=layer_active.astype(jnp.float32) / layer_total,
        active_synapses=active,
        disconnected_per_layer=disconnected,
        disconnected_fraction=jnp.sum(disconnected).astype(jnp.float32) / float(spec.num_units),
        effective_macs=macs,
    )
