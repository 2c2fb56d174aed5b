"""Synaptic-cluster-driven probabilistic genetic encoding (pure, jittable).

An offspring's masks are drawn from its parent's masked weights ``w``: a cluster (a conv filter,
optionally a conv kernel, or all incoming synapses of a dense neuron) survives with probability
``P_c = F_c * (exp(sum_{i in c} trunc(|w_i|) / z_c) - 1)``, each of its synapses with
``P_j = F_s * (exp(|w_j| / z_s) - 1)``, where ``z = max / ln 2`` (the strongest synapse / cluster
has probability ``F``) and optional removal rates ``r`` in (0, 1] scale the removal probabilities
(``P' = 1 - r (1 - P)``; ``r = 1``, the default, is the published encoding). A cluster left
without synapses loses its bias too; the output layer's neurons are never removed as clusters.
The formulas, scopes and ablation modes are described in ``docs/cluster_synthesis.md``.

The structure (``mode``, scopes, conv clusters) is the static :class:`EncodingConfig`; the
numbers (``F_s``, ``F_c``, ``truncation``, ``r_s``, ``r_c``) are the :class:`EncodingHyper`
pytree, so a sweep can trace them.

Example (the synapse rule on three magnitudes, the strongest 1.0: ``P = 2**(|w| / 1.0) - 1``;
:func:`synthesize` draws a whole network's masks):
    >>> import jax.numpy as jnp
    >>> probabilities = synapse_probabilities(jnp.array([0.0, 0.5, 1.0]), 1.0)
    >>> probabilities
    Array([0. , 0.41421354, 1. ], dtype=float32)
    >>> gentle(probabilities, 0.5)  # removal rate 0.5 halves every removal probability
    Array([0.5 , 0.70710677, 1. ], dtype=float32)
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from synprune_jax.synthesis.lenet import (
    CONV_LAYERS,
    LAYERS,
    LeNetSpec,
    Masks,
    Params,
    kept_synapses,
)

MODES = ("both", "synapse", "cluster")
SCOPES = ("layer", "network")
SYNAPSE_SCOPES = ("layer", "cluster", "network")
CONV_CLUSTERS = ("filter", "kernel")


@dataclasses.dataclass(frozen=True)
class EncodingConfig:
    """Static structure of the encoding (hashable; see the module docstring).

    Attributes:
        mode: ``"both"`` (default), ``"synapse"`` (synapse-only ablation) or ``"cluster"``
            (cluster-only ablation).
        conv_clusters: ``"filter"`` (default: a whole 5x5xC_in filter is one cluster) or
            ``"kernel"`` (each 5x5 kernel of a filter is one cluster; a filter dies when all its
            kernels have).
        scope: normalisation of ``z_c`` and ``tau``: ``"layer"`` (default: per layer) or
            ``"network"``.
        synapse_scope: normalisation of ``z_s``: ``"cluster"`` (default: the strongest synapse
            of each filter / neuron has probability ``F_s``), ``"layer"`` (the strongest of each
            layer has) or ``"network"``.

    Raises:
        ValueError: a value not among the listed ones.

    Examples:
        >>> EncodingConfig()  # the published encoding
        EncodingConfig(mode='both', conv_clusters='filter', scope='layer', synapse_scope='cluster')
        >>> EncodingConfig(mode="synapse").mode  # the synapse-only ablation
        'synapse'
        >>> EncodingConfig(scope="cluster")
        Traceback (most recent call last):
        ...
        ValueError: encoding.scope must be one of ['layer', 'network'], got 'cluster'
    """

    mode: str = "both"
    conv_clusters: str = "filter"
    scope: str = "layer"
    synapse_scope: str = "cluster"

    def __post_init__(self):
        for name, valid in (
            ("mode", MODES),
            ("conv_clusters", CONV_CLUSTERS),
            ("scope", SCOPES),
            ("synapse_scope", SYNAPSE_SCOPES),
        ):
            if getattr(self, name) not in valid:
                raise ValueError(
                    f"encoding.{name} must be one of {list(valid)}, got {getattr(self, name)!r}"
                )


class EncodingHyper(struct.PyTreeNode):
    """Numeric constants of the encoding (float scalars, traced in a sweep); the defaults are the
    published encoding. :func:`check_encoding_hyper` checks their ranges.

    Attributes:
        synapse_factor: environmental factor ``F_s`` in (0, 1] on synapse probabilities
            (default 1.0: the magnitude rule alone already removes most weak synapses).
        cluster_factor: environmental factor ``F_c`` in (0, 1] on cluster probabilities
            (default 1.0).
        truncation: ``tau`` as a fraction of the layer's (or network's) largest ``|w|``, in
            [0, 1) (default 0.1).
        synapse_rate: removal rate ``r_s`` in (0, 1]: synapse survival becomes
            ``1 - r_s * (1 - P_j)`` (default 1.0: the published encoding; smaller is a gentler
            step per generation).
        cluster_rate: removal rate ``r_c`` in (0, 1] on cluster survival, likewise
            (default 1.0).

    Examples:
        >>> hyper = EncodingHyper(synapse_rate=0.5)  # a gentler synapse step, else published
        >>> hyper.synapse_factor, hyper.truncation, hyper.synapse_rate
        (1.0, 0.1, 0.5)
        >>> from synprune_jax.synthesis import check_encoding_hyper
        >>> check_encoding_hyper(hyper.replace(cluster_rate=0.0))
        Traceback (most recent call last):
        ...
        ValueError: encoding.cluster_rate must be in (0, 1], got 0.0
    """

    synapse_factor: Any = 1.0
    cluster_factor: Any = 1.0
    truncation: Any = 0.1
    synapse_rate: Any = 1.0
    cluster_rate: Any = 1.0


def check_encoding_hyper(hyper: EncodingHyper) -> None:
    """Raises ``ValueError`` on out-of-range constants (host side, concrete values)."""
    for name in ("synapse_factor", "cluster_factor", "synapse_rate", "cluster_rate"):
        value = float(getattr(hyper, name))
        if not 0.0 < value <= 1.0:
            raise ValueError(f"encoding.{name} must be in (0, 1], got {value}")
    if not 0.0 <= float(hyper.truncation) < 1.0:
        raise ValueError(f"encoding.truncation must be in [0, 1), got {float(hyper.truncation)}")


def _expm1_scaled(values: jax.Array, maximum: jax.Array) -> jax.Array:
    """``exp(values / z) - 1`` with ``z = maximum / ln 2``, computed as ``2**(values / max) - 1``.

    The two are equal; the base-2 form gives exactly 1 at ``values == maximum`` in floating
    point. Where ``maximum`` is 0 every value is 0 and the result is 0.
    """
    safe = jnp.where(maximum > 0, maximum, 1.0)
    # XLA may divide as x * (1 / m), which is not exactly 1 at x == m: pin the maximum itself
    ratio = jnp.where((values >= maximum) & (maximum > 0), 1.0, values / safe)
    return jnp.clip(jnp.exp2(ratio) - 1.0, 0.0, 1.0)


def gentle(probabilities: jax.Array, rate: float = 1.0) -> jax.Array:
    """``1 - rate * (1 - P)``: the removal probability ``1 - P`` scaled by ``rate`` in (0, 1].

    ``rate = 1`` returns ``probabilities`` unchanged (the published encoding, bit for bit).
    """
    if isinstance(rate, (int, float)):
        return probabilities if float(rate) == 1.0 else 1.0 - rate * (1.0 - probabilities)
    # a traced rate (a sweep): exactly ``probabilities`` where it is 1, as for the Python 1.0
    return jnp.where(rate == 1.0, probabilities, 1.0 - rate * (1.0 - probabilities))


def synapse_probabilities(
    magnitudes: jax.Array, maximum: jax.Array, factor: float = 1.0
) -> jax.Array:
    """``P_j = factor * (exp(|w_j| / z_s) - 1)`` with ``z_s = maximum / ln 2``.

    Args:
        magnitudes: ``[...]`` masked ``|w|`` of one layer (0 for dead synapses).
        maximum: the largest ``|w|`` in the normalisation scope: a scalar, or an array that
            broadcasts against ``magnitudes`` (per-cluster maxima).
        factor: environmental factor ``F_s``.

    Returns:
        ``[...]`` survival probabilities in ``[0, factor]``.
    """
    return factor * _expm1_scaled(magnitudes, maximum)


def truncate(magnitudes: jax.Array, threshold: jax.Array) -> jax.Array:
    """``trunc``: magnitudes below ``threshold`` become 0 (same shape)."""
    return jnp.where(magnitudes >= threshold, magnitudes, 0.0)


def _cluster_axes(name: str, conv_clusters: str) -> tuple[int, ...]:
    """The kernel axes a cluster spans (the others index the clusters)."""
    if name in CONV_LAYERS:
        return (0, 1) if conv_clusters == "kernel" else (0, 1, 2)
    return (0,)


def cluster_sums(name: str, magnitudes: jax.Array, conv_clusters: str = "filter") -> jax.Array:
    """Sums of (truncated) magnitudes per cluster.

    Args:
        name: layer name (conv layers have kernels ``[5, 5, in, out]``, dense ``[in, out]``).
        magnitudes: the layer's (truncated) ``|w|``.
        conv_clusters: ``"filter"`` -> ``[out]``; ``"kernel"`` -> ``[in, out]`` for conv layers.
            Dense layers always give ``[out]`` (a neuron's incoming synapses).
    """
    return jnp.sum(magnitudes, axis=_cluster_axes(name, conv_clusters))


def cluster_probabilities(sums: jax.Array, maximum: jax.Array, factor: float = 1.0) -> jax.Array:
    """``P_c = factor * (exp(S_c / z_c) - 1)`` with ``z_c = maximum / ln 2``; shape of ``sums``."""
    return factor * _expm1_scaled(sums, maximum)


def survival_probabilities(
    params: Params, masks: Masks, config: EncodingConfig, hyper: EncodingHyper
) -> tuple[dict, dict]:
    """Synapse and cluster survival probabilities of every layer.

    Args:
        params: one network's parameters (see :mod:`synprune_jax.synthesis.lenet`).
        masks: its masks.
        config: the encoding's structure (scopes, conv clusters).
        hyper: its constants (factors, truncation, removal rates).

    Returns:
        ``(synapse, cluster)``: dicts by layer name; ``synapse[name]`` is shaped like the kernel,
        ``cluster[name]`` is ``[out]`` (``[in, out]`` for conv layers with kernel clusters).
        The removal rates are applied (:func:`gentle`); masked-out synapses keep probability 0.
        The output layer's cluster probabilities are all 1. The ablation modes do not
        change these values (see :func:`synthesize`).
    """
    magnitudes = {
        name: jnp.where(masks[name]["kernel"], jnp.abs(params[name]["kernel"]), 0.0)
        for name in LAYERS
    }
    layer_max = {name: jnp.max(magnitudes[name]) for name in LAYERS}
    network_max = jnp.max(jnp.stack(list(layer_max.values())))
    scope_max = {
        name: network_max if config.scope == "network" else layer_max[name] for name in LAYERS
    }
    synapse = {}
    for name in LAYERS:
        if config.synapse_scope == "cluster":
            maximum = jnp.max(
                magnitudes[name], keepdims=True, axis=_cluster_axes(name, config.conv_clusters)
            )
        elif config.synapse_scope == "network":
            maximum = network_max
        else:
            maximum = layer_max[name]
        probabilities = gentle(
            synapse_probabilities(magnitudes[name], maximum, hyper.synapse_factor),
            hyper.synapse_rate,
        )
        # a dead synapse stays at probability 0 (gentle would give it 1 - r_s)
        synapse[name] = jnp.where(masks[name]["kernel"], probabilities, 0.0)
    sums = {
        name: cluster_sums(
            name,
            truncate(magnitudes[name], hyper.truncation * scope_max[name]),
            config.conv_clusters,
        )
        for name in LAYERS
    }
    sums_max = {name: jnp.max(sums[name]) for name in LAYERS}
    network_sums_max = jnp.max(jnp.stack([sums_max[name] for name in LAYERS[:-1]]))
    cluster = {}
    for name in LAYERS:
        if name == LAYERS[-1]:
            cluster[name] = jnp.ones(sums[name].shape, jnp.float32)
            continue
        maximum = network_sums_max if config.scope == "network" else sums_max[name]
        cluster[name] = gentle(
            cluster_probabilities(sums[name], maximum, hyper.cluster_factor), hyper.cluster_rate
        )
    return synapse, cluster


def synthesize(
    key: jax.Array,
    params: Params,
    masks: Masks,
    config: EncodingConfig,
    hyper: EncodingHyper,
    spec: LeNetSpec | None = None,
) -> Masks:
    """Draws an offspring's masks from its parent (one network; vmap for several).

    Args:
        key: PRNG key.
        params: the parent's parameters (float32 leaves, shapes in
            :mod:`synprune_jax.synthesis.lenet`; masked-out entries are ignored).
        masks: the parent's masks (bool, shaped like ``params``); the offspring's are a subset
            of them.
        config: the encoding's structure (static under ``jit``).
        hyper: its constants (may be traced).
        spec: the network's structure (static under ``jit``); when given, synapses and biases
            that can no longer influence the output are cleared too (:func:`remove_unused`).

    Returns:
        Offspring masks (bool, shaped like ``masks``): kernel masks keep synapses that survive
        (cluster and synapse draws per ``config.mode``); bias masks keep clusters that still have
        an alive synapse (output layer biases always stay); with ``spec``, also only units
        :func:`remove_unused` keeps.

    Examples:
        >>> from synprune_jax.synthesis.lenet import LeNetSpec
        >>> spec = LeNetSpec(image_size=16, widths=(3, 4, 8, 6))
        >>> params = jax.jit(spec.init)(jax.random.key(0))
        >>> parent = spec.full_masks(params)
        >>> draw = jax.jit(synthesize, static_argnums=(3, 5))  # config and spec are static
        >>> child = draw(jax.random.key(1), params, parent, EncodingConfig(),
        ...              EncodingHyper(synapse_rate=0.5), spec)
        >>> child["conv1"]["kernel"].shape, child["conv1"]["kernel"].dtype
        ((5, 5, 1, 3), dtype('bool'))
        >>> pairs = zip(jax.tree_util.tree_leaves(child), jax.tree_util.tree_leaves(parent))
        >>> all(np.all(np.asarray(c) <= np.asarray(p)) for c, p in pairs)  # a subset
        True
        >>> int(np.sum(child["dense3"]["bias"]))  # the output biases stay
        10
    """
    synapse_p, cluster_p = survival_probabilities(params, masks, config, hyper)
    keys = jax.random.split(key, 2 * len(LAYERS))
    out = {}
    for index, name in enumerate(LAYERS):
        survive = masks[name]["kernel"]
        if config.mode in ("both", "synapse"):
            survive = survive & jax.random.bernoulli(keys[2 * index], synapse_p[name])
        if config.mode in ("both", "cluster") and name != LAYERS[-1]:
            clusters = jax.random.bernoulli(keys[2 * index + 1], cluster_p[name])
            # cluster values broadcast against the kernel (explicit ranks)
            survive = survive & jnp.expand_dims(clusters, _cluster_axes(name, config.conv_clusters))
        bias_mask = masks[name]["bias"]
        if name != LAYERS[-1]:
            bias_mask = bias_mask & jnp.any(survive.reshape(-1, survive.shape[-1]), axis=0)
        out[name] = {"kernel": survive, "bias": bias_mask}
    return remove_unused(spec, out) if spec is not None else out


def remove_unused(spec: LeNetSpec, masks: Masks) -> Masks:
    """Clears synapses and biases that cannot influence the output (function-preserving).

    Keeps a synapse only if both its source and its target unit are kept by
    :func:`~synprune_jax.synthesis.lenet.kept_units` (a unit that outputs nothing, or whose
    output no kept unit reads, is not), and a bias only if its unit is kept. The network's outputs
    do not change; its synapse count becomes the compact network's weight count.
    """
    kept, kernels = kept_synapses(spec, masks)
    return {
        name: {"kernel": kernel, "bias": masks[name]["bias"] & units}
        for name, kernel, units in zip(LAYERS, kernels, kept, strict=True)
    }
