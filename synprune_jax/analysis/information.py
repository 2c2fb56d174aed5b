"""Histogram-based information measures in JAX (entropies in nats).

Every estimator bins samples into ``bins`` equal-width bins over ``[lower, upper]`` (by default
the sample's own ``[min, max]``; a constant variable falls in one bin and has entropy 0) and uses
the plug-in estimate of the discrete distribution:

* :func:`entropy` ``H(X) = -sum_i p_i log p_i`` (``normalize=True`` divides by ``log(bins)``);
* :func:`joint_entropy` ``H(X, Y)`` over the ``bins x bins`` grid;
* :func:`mutual_information` ``I(X; Y) = H(X) + H(Y) - H(X, Y)``;
* :func:`normalized_mutual_information` ``I / sqrt(H(X) H(Y))`` (``"sqrt"``), ``I / min``,
  ``I / max``, ``2 I / (H(X) + H(Y))`` (``"arithmetic"``) or ``I / H(X, Y)`` (``"joint"``);
  0 when the denominator is 0.

:func:`layer_activations` records an MLP's activations and :func:`information_profile`
summarises them per unit, per layer and against the actions. All functions are pure and jittable
(``bins`` static); ``docs/es_ga.md`` discusses the plug-in bias.

Example:
    >>> import jax.numpy as jnp
    >>> x = jnp.asarray([0, 0, 1, 1, 1, 1, 2, 2], jnp.float32)
    >>> round(float(entropy(x, 3)), 4)  # -(.25 ln .25 + .5 ln .5 + .25 ln .25)
    1.0397
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from synprune_jax import masks as masks_lib
from synprune_jax.networks import ACTIVATIONS, MLPSpec

NMI_METHODS = ("sqrt", "min", "max", "arithmetic", "joint")


def bin_indices(x: jax.Array, bins: int, lower=None, upper=None) -> jax.Array:
    """Bin index of every sample: ``x [T] -> int32 [T]`` in ``[0, bins)``.

    ``lower``/``upper`` default to ``min(x)``/``max(x)``; values outside are clipped into the
    end bins; a zero-width range puts everything in bin 0.
    """
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    x = jnp.asarray(x, jnp.float32)
    lower = jnp.min(x) if lower is None else jnp.asarray(lower, jnp.float32)
    upper = jnp.max(x) if upper is None else jnp.asarray(upper, jnp.float32)
    width = upper - lower
    scaled = jnp.where(width > 0, (x - lower) / jnp.where(width > 0, width, 1.0), 0.0)
    return jnp.clip(jnp.floor(scaled * bins), 0, bins - 1).astype(jnp.int32)


def entropy_from_probabilities(probabilities: jax.Array) -> jax.Array:
    """``-sum p log p`` over all entries (``0 log 0 = 0``), in nats."""
    p = jnp.asarray(probabilities, jnp.float32)
    return -jnp.sum(jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1.0)), 0.0))


def _weights(x: jax.Array, weights) -> jax.Array:
    if weights is None:
        return jnp.ones(x.shape, jnp.float32)
    return jnp.broadcast_to(jnp.asarray(weights, jnp.float32), x.shape)


def histogram(x: jax.Array, bins: int, lower=None, upper=None, weights=None) -> jax.Array:
    """Empirical probabilities ``[bins]`` of ``x [T]`` (``weights [T]``, e.g. an alive flag,
    count samples fractionally; the bin range is taken over all samples)."""
    index = bin_indices(x, bins, lower, upper)
    w = _weights(x, weights)
    counts = jnp.zeros((bins,), jnp.float32).at[index].add(w)
    return counts / jnp.maximum(jnp.sum(w), 1e-12)


def joint_histogram(
    x: jax.Array, y: jax.Array, bins: int, x_range=(None, None), y_range=(None, None), weights=None
) -> jax.Array:
    """Empirical joint probabilities ``[bins, bins]`` of paired samples ``x [T]``, ``y [T]``."""
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"x and y must be paired 1-D samples, got {x.shape} and {y.shape}")
    i = bin_indices(x, bins, *x_range)
    j = bin_indices(y, bins, *y_range)
    w = _weights(x, weights)
    counts = jnp.zeros((bins, bins), jnp.float32).at[i, j].add(w)
    return counts / jnp.maximum(jnp.sum(w), 1e-12)


def entropy(
    x: jax.Array, bins: int = 16, *, lower=None, upper=None, normalize: bool = False, weights=None
) -> jax.Array:
    """Histogram entropy of ``x [T]`` (nats; divided by ``log(bins)`` if ``normalize``).

    Args:
        x: ``[T]`` samples (any real dtype; binned as float32).
        bins: number of equal-width bins (static, >= 1).
        lower: lower end of the binning range (default ``min(x)``); values below are clipped.
        upper: upper end of the binning range (default ``max(x)``); values above are clipped.
        normalize: divide by ``log(bins)`` (static; ignored when ``bins == 1``).
        weights: ``[T]`` float sample weights (e.g. the alive flag of a rollout); default all 1.

    Returns:
        float32 scalar: the entropy in nats, or in [0, 1] when ``normalize``.

    Raises:
        ValueError: ``bins < 1``.

    Examples:
        >>> x = jnp.array([0.0, 0.0, 1.0, 1.0])
        >>> round(float(entropy(x, bins=2)), 4)  # two equally likely values: ln 2 nats
        0.6931
    """
    h = entropy_from_probabilities(histogram(x, bins, lower, upper, weights))
    return h / jnp.log(bins) if normalize and bins > 1 else h


def joint_entropy(
    x: jax.Array,
    y: jax.Array,
    bins: int = 16,
    *,
    x_range=(None, None),
    y_range=(None, None),
    weights=None,
) -> jax.Array:
    """Joint histogram entropy ``H(X, Y)`` of paired samples, in nats.

    Each variable is binned into ``bins`` equal-width bins (see the module docstring); the
    result is the plug-in entropy of the ``bins x bins`` joint histogram.

    Args:
        x: ``[T]`` samples of ``X`` (any real dtype; binned as float32).
        y: ``[T]`` samples of ``Y``, paired with ``x`` (same shape).
        bins: bins per variable (static, >= 1).
        x_range: ``(lower, upper)`` binning range of ``x``; a ``None`` end is ``min(x)`` /
            ``max(x)``. Values outside are clipped into the end bins.
        y_range: the same for ``y``.
        weights: ``[T]`` float sample weights (e.g. the alive flag of a rollout); default all 1.

    Returns:
        float32 scalar ``H(X, Y)``, between ``max(H(X), H(Y))`` and ``H(X) + H(Y)``.

    Raises:
        ValueError: ``x`` and ``y`` are not 1-D arrays of the same shape, or ``bins < 1``.

    Examples:
        >>> x = jnp.array([0.0, 0.0, 1.0, 1.0])
        >>> y = jnp.array([0.0, 1.0, 0.0, 1.0])
        >>> round(float(joint_entropy(x, x, bins=2)), 4)  # H(X, X) = H(X) = ln 2
        0.6931
        >>> round(float(joint_entropy(x, y, bins=2)), 4)  # four equally likely pairs: ln 4
        1.3863
    """
    return entropy_from_probabilities(joint_histogram(x, y, bins, x_range, y_range, weights))


def mutual_information(
    x: jax.Array,
    y: jax.Array,
    bins: int = 16,
    *,
    x_range=(None, None),
    y_range=(None, None),
    weights=None,
) -> jax.Array:
    """``I(X; Y) = H(X) + H(Y) - H(X, Y)`` of paired samples ``x [T]``, ``y [T]`` (nats).

    Args:
        x: ``[T]`` samples of ``X`` (any real dtype; binned as float32).
        y: ``[T]`` samples of ``Y``, paired with ``x`` (same shape).
        bins: bins per variable (static, >= 1).
        x_range: ``(lower, upper)`` binning range of ``x``; a ``None`` end is ``min(x)`` /
            ``max(x)``. Values outside are clipped into the end bins.
        y_range: the same for ``y``.
        weights: ``[T]`` float sample weights (e.g. the alive flag of a rollout); default all 1.

    Returns:
        float32 scalar ``I(X; Y)`` in nats, between 0 and ``min(H(X), H(Y))`` (up to rounding).

    Raises:
        ValueError: ``x`` and ``y`` are not 1-D arrays of the same shape, or ``bins < 1``.

    Examples:
        >>> x = jnp.array([0.0, 0.0, 1.0, 1.0])
        >>> independent = jnp.array([0.0, 1.0, 0.0, 1.0])
        >>> round(float(mutual_information(x, x, bins=2)), 4)  # I(X; X) = H(X)
        0.6931
        >>> round(float(mutual_information(x, independent, bins=2)), 4)
        0.0
    """
    joint = joint_histogram(x, y, bins, x_range, y_range, weights)
    hx = entropy_from_probabilities(jnp.sum(joint, axis=1))
    hy = entropy_from_probabilities(jnp.sum(joint, axis=0))
    return hx + hy - entropy_from_probabilities(joint)


def normalized_mutual_information(
    x: jax.Array,
    y: jax.Array,
    bins: int = 16,
    method: str = "sqrt",
    *,
    x_range=(None, None),
    y_range=(None, None),
    weights=None,
) -> jax.Array:
    """Mutual information divided by an entropy bound (see the module docstring); in [0, 1].

    Args:
        x: ``[T]`` samples of ``X`` (any real dtype; binned as float32).
        y: ``[T]`` samples of ``Y``, paired with ``x`` (same shape).
        bins: bins per variable (static, >= 1).
        method: the denominator (static), one of :data:`NMI_METHODS`: ``"sqrt"``
            ``sqrt(H(X) H(Y))``, ``"min"``, ``"max"``, ``"arithmetic"`` ``(H(X) + H(Y)) / 2``
            or ``"joint"`` ``H(X, Y)``.
        x_range: ``(lower, upper)`` binning range of ``x``; a ``None`` end is ``min(x)`` /
            ``max(x)``. Values outside are clipped into the end bins.
        y_range: the same for ``y``.
        weights: ``[T]`` float sample weights (e.g. the alive flag of a rollout); default all 1.

    Returns:
        float32 scalar: ``I(X; Y)`` over the denominator; 1 when the binned ``X`` and ``Y``
        determine each other, 0 when their joint histogram is the product of the marginals
        and whenever the denominator is 0 (e.g. a constant variable).

    Raises:
        ValueError: an unknown ``method``; ``x`` and ``y`` not 1-D arrays of the same shape;
            ``bins < 1``.

    Examples:
        >>> x = jnp.array([0.0, 0.0, 1.0, 1.0])
        >>> y = jnp.array([0.0, 0.0, 0.0, 1.0])  # H(X) = ln 2, H(Y) = 0.5623, I = 0.2158
        >>> round(float(normalized_mutual_information(x, x, bins=2)), 4)
        1.0
        >>> round(float(normalized_mutual_information(x, y, bins=2)), 4)  # 0.2158 / 0.6243
        0.3456
        >>> round(float(normalized_mutual_information(x, y, bins=2, method="min")), 4)
        0.3837
        >>> float(normalized_mutual_information(x, jnp.zeros(4), bins=2))  # H(Y) = 0
        0.0
    """
    if method not in NMI_METHODS:
        raise ValueError(f"unknown method {method!r}; valid: {list(NMI_METHODS)}")
    joint = joint_histogram(x, y, bins, x_range, y_range, weights)
    hx = entropy_from_probabilities(jnp.sum(joint, axis=1))
    hy = entropy_from_probabilities(jnp.sum(joint, axis=0))
    hxy = entropy_from_probabilities(joint)
    mi = hx + hy - hxy
    denominator = {
        "sqrt": jnp.sqrt(hx * hy),
        "min": jnp.minimum(hx, hy),
        "max": jnp.maximum(hx, hy),
        "arithmetic": 0.5 * (hx + hy),
        "joint": hxy,
    }[method]
    return jnp.where(
        denominator > 1e-12, mi / jnp.where(denominator > 1e-12, denominator, 1.0), 0.0
    )


def unit_entropies(
    activations: jax.Array, bins: int = 16, normalize: bool = True, weights=None
) -> jax.Array:
    """Entropy of each column: ``activations [T, U] -> [U]`` (``weights [T]``)."""
    return jax.vmap(
        lambda column: entropy(column, bins, normalize=normalize, weights=weights), in_axes=1
    )(activations)


def mutual_information_matrix(
    a: jax.Array,
    b: jax.Array,
    bins: int = 16,
    normalized: bool = False,
    method: str = "sqrt",
    weights=None,
) -> jax.Array:
    """MI between every column pair: ``a [T, U]``, ``b [T, V] -> [U, V]`` (``weights [T]``)."""

    def pair(x, y):
        if normalized:
            return normalized_mutual_information(x, y, bins, method, weights=weights)
        return mutual_information(x, y, bins, weights=weights)

    return jax.vmap(lambda x: jax.vmap(lambda y: pair(x, y), in_axes=1)(b), in_axes=1)(a)


def layer_activations(spec: MLPSpec, params, masks, inputs: jax.Array) -> tuple[jax.Array, ...]:
    """Post-activation outputs of every layer of one masked MLP.

    Args:
        spec: the network.
        params: one network's params.
        masks: its masks.
        inputs: ``[T, in]``.

    Returns:
        One ``[T, units]`` array per weight layer (hidden layers, then the output layer).
    """
    dense = masks_lib.apply_masks(params, masks)
    x = jnp.asarray(inputs, jnp.float32)
    outputs = []
    for index, name in enumerate(spec.layer_names()):
        layer = dense["params"][name]
        last = index == spec.num_layers - 1
        activation = ACTIVATIONS[spec.output_activation if last else spec.activation]
        x = activation(x @ layer["kernel"] + layer["bias"][None, :])
        outputs.append(x)
    return tuple(outputs)


def information_profile(
    spec: MLPSpec,
    params,
    masks,
    observations: jax.Array,
    actions: jax.Array | None = None,
    bins: int = 16,
    weights: jax.Array | None = None,
) -> dict:
    """Per-unit and per-layer information measures of one network on recorded observations.

    Args:
        spec: the network.
        params: one network's params.
        masks: its masks.
        observations: ``[T, in]`` inputs recorded during a rollout.
        actions: ``[T, A]`` the actions taken (default: the network's own outputs).
        bins: histogram bins.
        weights: ``[T]`` sample weights (e.g. the alive flag of a rollout); default all 1.

    Returns:
        dict with ``"unit_entropy"``: tuple of ``[U_l]`` normalised entropies per layer;
        ``"layer_entropy"`` ``[L]`` their means; ``"layer_action_mi"`` ``[L]`` mean MI (nats)
        over (unit, action) pairs between each layer's units and the actions;
        ``"layer_action_nmi"`` ``[L]`` the same with ``sqrt``-normalised MI;
        ``"action_mi"`` scalar, the mean of ``layer_action_mi`` over hidden layers (the whole
        network's when it has none).
    """
    activations = layer_activations(spec, params, masks, observations)
    if actions is None:
        actions = activations[-1]
    unit = tuple(unit_entropies(a, bins, weights=weights) for a in activations)
    mi = jnp.stack(
        [
            jnp.mean(mutual_information_matrix(a, actions, bins, weights=weights))
            for a in activations
        ]
    )
    nmi = jnp.stack(
        [
            jnp.mean(mutual_information_matrix(a, actions, bins, normalized=True, weights=weights))
            for a in activations
        ]
    )
    hidden = mi[:-1] if spec.num_layers > 1 else mi
    return {
        "unit_entropy": unit,
        "layer_entropy": jnp.stack([jnp.mean(u) for u in unit]),
        "layer_action_mi": mi,
        "layer_action_nmi": nmi,
        "action_mi": jnp.mean(hidden),
    }
