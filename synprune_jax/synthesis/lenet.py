"""LeNet-5 in flax with masks over synapses and clusters, counts, FLOPs and compact export.

Architecture (``widths = (6, 16, 120, 84)`` by default)::

    x [N, S, S, C] -> conv1 5x5 (widths[0]) -> relu -> maxpool 2 -> conv2 5x5 (widths[1]) -> relu
      -> maxpool 2 -> flatten -> dense1 (widths[2]) -> relu -> dense2 (widths[3]) -> relu
      -> dense3 (num_classes) -> logits

Parameters (flax linen ``params`` collection, without the outer ``{"params": ...}``)::

    {"conv1": {"kernel": [5, 5, C, w0], "bias": [w0]}, "conv2": {"kernel": [5, 5, w0, w1], ...},
     "dense1": {"kernel": [F, w2], ...}, "dense2": {"kernel": [w2, w3], ...},
     "dense3": {"kernel": [w3, classes], ...}}

with ``F = P * P * w1`` (``P`` the side after the second pooling, 5 for 32x32 inputs). Masks are
boolean trees of the same structure. A kernel mask says which **synapses** are alive; a bias mask
says which **clusters** (conv filters, dense neurons) are alive: the encoding clears a cluster's
bias mask together with all its synapses, so a dead cluster outputs exactly zero.
:func:`compact` removes dead and unused filters / neurons physically.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple, cast

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from synprune_jax.masks import apply_masks

Params = dict
Masks = dict

LAYERS = ("conv1", "conv2", "dense1", "dense2", "dense3")
CONV_LAYERS = ("conv1", "conv2")
KERNEL_SIZE = 5


class LeNet5(nn.Module):
    """LeNet-5 with configurable widths (the compact export reuses it with smaller widths)."""

    widths: tuple[int, int, int, int] = (6, 16, 120, 84)
    num_classes: int = 10

    @nn.compact
    def __call__(self, x):
        x = nn.Conv(self.widths[0], (KERNEL_SIZE, KERNEL_SIZE), padding="VALID", name="conv1")(x)
        x = nn.max_pool(nn.relu(x), (2, 2), strides=(2, 2))
        x = nn.Conv(self.widths[1], (KERNEL_SIZE, KERNEL_SIZE), padding="VALID", name="conv2")(x)
        x = nn.max_pool(nn.relu(x), (2, 2), strides=(2, 2))
        x = x.reshape((x.shape[0], -1))
        x = nn.relu(nn.Dense(self.widths[2], name="dense1")(x))
        x = nn.relu(nn.Dense(self.widths[3], name="dense2")(x))
        return nn.Dense(self.num_classes, name="dense3")(x)


@dataclasses.dataclass(frozen=True)
class LeNetSpec:
    """Static description of a masked LeNet-5 (hashable).

    Attributes:
        image_size: input side ``S`` (square images); 28 and 32 are the usual ones, any
            ``S >= 16`` works.
        channels: input channels ``C``.
        num_classes: outputs (>= 2).
        widths: filters of conv1, conv2 and neurons of dense1, dense2 (4 positive ints; any
            sequence, stored as a tuple of ints).

    Raises:
        ValueError: ``widths`` not 4 positive ints, ``image_size < 16``, ``channels < 1`` or
            ``num_classes < 2``.

    Examples:
        >>> spec = LeNetSpec()  # the published LeNet-5 on 32x32 single-channel images
        >>> spec.conv_output_sizes, spec.pooled_size  # 32 - 4 = 28; 28 // 2 - 4 = 10; 10 // 2
        ((28, 10), 5)
        >>> spec.layer_inputs  # dense1 reads the 5 * 5 * 16 flattened features
        (1, 6, 400, 120, 84)
        >>> spec.num_synapses, spec.num_clusters  # kernel entries; 6 + 16 + 120 + 84
        (61470, 226)
        >>> jax.eval_shape(spec.init, jax.random.key(0))["dense1"]["kernel"].shape
        (400, 120)
        >>> LeNetSpec(image_size=12)
        Traceback (most recent call last):
        ...
        ValueError: image_size must be >= 16 for two 5x5 conv + 2x2 pool stages, got 12
    """

    image_size: int = 32
    channels: int = 1
    num_classes: int = 10
    widths: tuple[int, int, int, int] = (6, 16, 120, 84)

    def __post_init__(self):
        object.__setattr__(self, "widths", tuple(int(w) for w in self.widths))
        if len(self.widths) != 4 or any(w < 1 for w in self.widths):
            raise ValueError(
                f"widths must be 4 positive ints (conv1, conv2, dense1, dense2), got {self.widths}"
            )
        if self.image_size < 16:
            raise ValueError(
                f"image_size must be >= 16 for two 5x5 conv + 2x2 pool stages, "
                f"got {self.image_size}"
            )
        if self.channels < 1 or self.num_classes < 2:
            raise ValueError("channels must be >= 1 and num_classes >= 2")

    # ----- geometry ------------------------------------------------------------------------------
    @property
    def conv_output_sizes(self) -> tuple[int, int]:
        """Spatial side of conv1's and conv2's outputs (before pooling)."""
        first = self.image_size - KERNEL_SIZE + 1
        second = first // 2 - KERNEL_SIZE + 1
        return first, second

    @property
    def pooled_size(self) -> int:
        """Side ``P`` of the feature map entering dense1."""
        return self.conv_output_sizes[1] // 2

    @property
    def layer_inputs(self) -> tuple[int, ...]:
        """Input units / channels of each layer (dense1: the flattened features ``P*P*w1``)."""
        w0, w1, w2, w3 = self.widths
        return (self.channels, w0, self.pooled_size**2 * w1, w2, w3)

    @property
    def layer_outputs(self) -> tuple[int, ...]:
        return (*self.widths, self.num_classes)

    @property
    def positions(self) -> tuple[int, ...]:
        """Output positions per layer: how many times one synapse is used per image."""
        first, second = self.conv_output_sizes
        return (first * first, second * second, 1, 1, 1)

    @property
    def num_synapses(self) -> int:
        return sum(
            fan_in * fan_out * (KERNEL_SIZE**2 if name in CONV_LAYERS else 1)
            for name, fan_in, fan_out in zip(
                LAYERS, self.layer_inputs, self.layer_outputs, strict=True
            )
        )

    @property
    def num_clusters(self) -> int:
        """Prunable clusters: conv filters plus hidden dense neurons (outputs are never pruned)."""
        return sum(self.widths)

    def module(self) -> LeNet5:
        return LeNet5(widths=self.widths, num_classes=self.num_classes)

    # ----- per-network functions ---------------------------------------------------------------
    def init(self, key: jax.Array) -> Params:
        """Initial parameters of one network (flax defaults: LeCun-normal kernels, zero biases)."""
        dummy = jnp.zeros((1, self.image_size, self.image_size, self.channels), jnp.float32)
        return self.module().init(key, dummy)["params"]

    def full_masks(self, params: Params) -> Masks:
        return jax.tree_util.tree_map(lambda leaf: jnp.ones(leaf.shape, jnp.bool_), params)

    def apply(self, params: Params, masks: Masks, images: jax.Array) -> jax.Array:
        """Masked forward pass: ``images [N, S, S, C] -> logits [N, num_classes]``."""
        return cast(jax.Array, self.module().apply({"params": apply_masks(params, masks)}, images))

    def check_images(self, images) -> None:
        expected = (self.image_size, self.image_size, self.channels)
        if tuple(images.shape[1:]) != expected:
            raise ValueError(
                f"images must be [N, {expected[0]}, {expected[1]}, {expected[2]}], "
                f"got {tuple(images.shape)}"
            )


# ----- structure statistics (jittable) ------------------------------------------------------------


class NetworkStats(NamedTuple):
    """Structure of one masked LeNet (all int32 / float32 scalars unless stated).

    Attributes:
        synapses: alive kernel-mask entries (the headline synapse count).
        effective_synapses: alive synapses between kept units (the compact network's weights).
        clusters: kept conv filters + hidden dense neurons (what :func:`compact` keeps).
        layer_synapses: ``[5]`` alive synapses per layer.
        layer_clusters: ``[5]`` kept filters / neurons per layer (dense3: its classes).
        flops: ``2 *`` multiply-adds of one image through the compact network (kernels only).
    """

    synapses: jax.Array
    effective_synapses: jax.Array
    clusters: jax.Array
    layer_synapses: jax.Array
    layer_clusters: jax.Array
    flops: jax.Array


def _along(vector: jax.Array, axis: int, ndim: int) -> jax.Array:
    """Reshapes ``[n]`` so it broadcasts along ``axis`` of an ``ndim``-array (explicit ranks)."""
    shape = [1] * ndim
    shape[axis] = vector.shape[0]
    return vector.reshape(shape)


def kept_units(spec: LeNetSpec, masks: Masks) -> list[jax.Array]:
    """Which filters / neurons survive compaction: ``[w0], [w1], [w2], [w3], [classes]`` bools.

    A unit is kept if it can output something non-zero (its bias is alive or some incoming synapse
    is) **and** some alive synapse of the next layer reads it from a kept unit (computed from the
    output backwards). Output units are always kept. Removing the others changes no output.
    """
    kept = [jnp.ones((spec.num_classes,), jnp.bool_)]
    for index in range(len(LAYERS) - 2, -1, -1):
        kernel, bias = masks[LAYERS[index]]["kernel"], masks[LAYERS[index]]["bias"]
        produces = bias | jnp.any(kernel.reshape(-1, kernel.shape[-1]), axis=0)
        reader = masks[LAYERS[index + 1]]["kernel"]
        reader = reader & _along(kept[0], -1, reader.ndim)  # synapses into kept units
        if LAYERS[index] == "conv2":  # dense1 reads conv2 through the flatten (h, w, c)
            reader = reader.reshape(spec.pooled_size, spec.pooled_size, -1, reader.shape[-1])
        kept.insert(0, produces & jnp.any(reader, axis=(0, 1, 3) if reader.ndim == 4 else 1))
    return kept


def kept_synapses(spec: LeNetSpec, masks: Masks) -> tuple[list, list]:
    """``(kept, kernels)``: per layer, the units kept by :func:`kept_units` and the kernel mask of
    the alive synapses between kept units (the compact network's weights)."""
    kept = kept_units(spec, masks)
    side = spec.pooled_size
    # per layer, which inputs come from kept units (dense1: per flattened feature, order h, w, c)
    inputs = [
        jnp.ones((spec.channels,), jnp.bool_),
        kept[0],
        jnp.broadcast_to(kept[1], (side, side, kept[1].shape[0])).reshape(-1),
        *kept[2:4],
    ]
    kernels = []
    for index, name in enumerate(LAYERS):
        kernel = masks[name]["kernel"]
        kernels.append(
            kernel & _along(inputs[index], -2, kernel.ndim) & _along(kept[index], -1, kernel.ndim)
        )
    return kept, kernels


def network_stats(spec: LeNetSpec, masks: Masks) -> NetworkStats:
    """Synapse, cluster and FLOP counts of one masked network (jittable)."""
    kept, kernels = kept_synapses(spec, masks)
    layer_synapses = jnp.stack([jnp.sum(masks[name]["kernel"], dtype=jnp.int32) for name in LAYERS])
    effective = [jnp.sum(kernel, dtype=jnp.int32) for kernel in kernels]
    macs = jnp.zeros((), jnp.float32)
    for count, positions in zip(effective, spec.positions, strict=True):
        macs = macs + count.astype(jnp.float32) * float(positions)
    layer_clusters = jnp.stack([jnp.sum(k, dtype=jnp.int32) for k in kept])
    return NetworkStats(
        synapses=jnp.sum(layer_synapses),
        effective_synapses=sum(effective, jnp.zeros((), jnp.int32)),
        clusters=jnp.sum(layer_clusters[:-1]),
        layer_synapses=layer_synapses,
        layer_clusters=layer_clusters,
        flops=2.0 * macs,
    )


# ----- compact export (host) -------------------------------------------------------------------


class CompactNetwork(NamedTuple):
    """A dense LeNet-5 with dead filters and neurons physically removed.

    Attributes:
        params: parameters of ``LeNet5(widths)`` (masked-out weights stored as zeros).
        widths: the kept filters / neurons per hidden layer (a layer with none keeps one all-zero
            unit, so shapes stay valid; it outputs zero like the removed ones).
        num_classes: outputs.
        kept: per layer the indices (into the full network) of the kept units, numpy int arrays.
    """

    params: Params
    widths: tuple[int, int, int, int]
    num_classes: int
    kept: tuple

    def module(self) -> LeNet5:
        return LeNet5(widths=self.widths, num_classes=self.num_classes)

    def apply(self, images: jax.Array) -> jax.Array:
        """``images [N, S, S, C] -> logits [N, num_classes]``."""
        return cast(jax.Array, self.module().apply({"params": self.params}, images))

    @property
    def num_weights(self) -> int:
        return int(sum(np.size(self.params[name]["kernel"]) for name in LAYERS))


def compact(spec: LeNetSpec, params: Params, masks: Masks) -> CompactNetwork:
    """Exports the masked network as a smaller dense one (host side; shapes depend on the masks).

    A filter / neuron survives when :func:`kept_units` keeps it; the kernels and biases of the
    survivors are copied (masked-out entries as zeros), the rest are dropped along both the
    output axis of their layer and the input axis of the next.

    Args:
        spec: the full network's structure.
        params: one network's parameters (float32, full shapes; no leading axis).
        masks: its masks (bool, shaped like ``params``).

    Returns:
        A :class:`CompactNetwork` whose ``apply`` equals ``spec.apply(params, masks, x)`` for
        every input ``x`` (up to float summation order).

    Examples:
        >>> spec = LeNetSpec(image_size=16, widths=(3, 4, 8, 6))
        >>> params = jax.jit(spec.init)(jax.random.key(0))
        >>> masks = jax.tree_util.tree_map(lambda p: np.ones(p.shape, bool), params)  # all alive
        >>> alive = np.array([False, True, True])  # conv1's filter 0 dies
        >>> masks["conv1"] = {"kernel": np.broadcast_to(alive, (5, 5, 1, 3)), "bias": alive}
        >>> net = compact(spec, params, masks)
        >>> net.widths, net.kept[0]
        ((2, 4, 8, 6), array([1, 2]))
        >>> net.num_weights, spec.num_synapses  # 515 - 25 (the filter) - 4 * 25 (its readers)
        (390, 515)
        >>> x = jnp.ones((2, 16, 16, 1))
        >>> bool(jnp.allclose(jax.jit(net.apply)(x), jax.jit(spec.apply)(params, masks, x)))
        True
    """
    kept = [np.asarray(k) for k in jax.jit(kept_units, static_argnums=0)(spec, masks)]
    indices = [
        np.flatnonzero(flags) if flags.any() else np.zeros((1,), np.int64) for flags in kept[:-1]
    ] + [np.arange(spec.num_classes)]
    zeroed = [not flags.any() for flags in kept[:-1]] + [False]
    masked = jax.tree_util.tree_map(
        lambda p, m: np.where(np.asarray(m), np.asarray(p), 0).astype(np.asarray(p).dtype),
        params,
        masks,
    )
    side = spec.pooled_size
    previous = np.arange(spec.channels)
    out = {}
    for index, name in enumerate(LAYERS):
        kernel, bias = masked[name]["kernel"], masked[name]["bias"]
        rows = indices[index]
        if name in CONV_LAYERS:
            kernel = kernel[:, :, previous][..., rows]
        elif index == 2:  # flatten (h, w, c) order
            kernel = kernel.reshape(side, side, spec.widths[1], -1)[:, :, previous]
            kernel = kernel.reshape(-1, kernel.shape[-1])[:, rows]
        else:
            kernel = kernel[previous][:, rows]
        bias = bias[rows]
        if zeroed[index]:
            kernel, bias = np.zeros_like(kernel), np.zeros_like(bias)
        out[name] = {"kernel": jnp.asarray(kernel), "bias": jnp.asarray(bias)}
        previous = rows
    conv1, conv2, dense1, dense2 = (int(len(i)) for i in indices[:-1])  # the hidden layers
    widths = (conv1, conv2, dense1, dense2)
    return CompactNetwork(
        params=out, widths=widths, num_classes=spec.num_classes, kept=tuple(indices)
    )
