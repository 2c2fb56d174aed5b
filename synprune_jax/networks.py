"""Masked multilayer perceptrons.

:class:`MLPSpec` is a frozen, hashable description of the network (safe as a static argument and
as part of a config). Its methods are written per individual; add the population axis with
``jax.vmap`` in one place.

Parameter layout (flax linen)::

    {"params": {"Dense_0": {"kernel": [in, h1], "bias": [h1]}, ..., "Dense_L-1": {...}}}

Example:
    >>> import jax
    >>> spec = MLPSpec(input_size=3, output_size=2, hidden_sizes=(4,))
    >>> params = spec.init(jax.random.key(0))
    >>> masks = spec.full_masks(params)
    >>> spec.apply(params, masks, jax.numpy.ones(3)).shape
    (2,)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import cast

import flax.linen as nn
import jax
import jax.numpy as jnp

from synprune_jax import masks as masks_lib
from synprune_jax.types import Masks, Params

ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "tanh": jnp.tanh,
    "relu": jax.nn.relu,
    "sigmoid": jax.nn.sigmoid,
    "linear": lambda x: x,
}


class _MLP(nn.Module):
    """Plain flax MLP; masks are applied to its parameters before ``apply``."""

    layer_sizes: Sequence[int]  # outputs of each Dense layer
    activation: str
    output_activation: str

    @nn.compact
    def __call__(self, x):
        for index, size in enumerate(self.layer_sizes):
            x = nn.Dense(size, kernel_init=nn.initializers.lecun_normal(), name=f"Dense_{index}")(x)
            last = index == len(self.layer_sizes) - 1
            x = ACTIVATIONS[self.output_activation if last else self.activation](x)
        return x


@dataclasses.dataclass(frozen=True)
class MLPSpec:
    """Static description of a masked MLP.

    Attributes:
        input_size: observation size.
        output_size: action / output size.
        hidden_sizes: widths of the hidden layers.
        activation: hidden activation, one of :data:`ACTIVATIONS`.
        output_activation: output activation (``"tanh"`` keeps Brax actions in [-1, 1]).
        mask_biases: if True, biases are maskable too (default False: only kernels are).

    Examples:
        >>> spec = MLPSpec(input_size=3, hidden_sizes=(4,), output_size=2)
        >>> spec.num_synapses, spec.num_layers  # 3 * 4 + 4 * 2 kernel weights, two layers
        (20, 2)
        >>> params = spec.init(jax.random.key(0))
        >>> spec.apply(params, spec.full_masks(params), jnp.ones(3)).shape
        (2,)
    """

    input_size: int
    output_size: int
    hidden_sizes: tuple[int, ...] = (32, 32)
    activation: str = "tanh"
    output_activation: str = "tanh"
    mask_biases: bool = False

    def __post_init__(self):
        object.__setattr__(self, "hidden_sizes", tuple(int(h) for h in self.hidden_sizes))
        for name in (self.activation, self.output_activation):
            if name not in ACTIVATIONS:
                raise ValueError(f"unknown activation {name!r}; valid: {sorted(ACTIVATIONS)}")
        sizes = (self.input_size, self.output_size, *self.hidden_sizes)
        if any(int(s) < 1 for s in sizes):
            raise ValueError(f"all layer sizes must be >= 1, got {sizes}")

    # ----- structure -------------------------------------------------------------------------
    @property
    def layer_sizes(self) -> tuple[int, ...]:
        """Unit counts of every layer, input first: ``(in, h1, ..., out)``."""
        return (self.input_size, *self.hidden_sizes, self.output_size)

    @property
    def num_layers(self) -> int:
        """Number of weight layers (kernels)."""
        return len(self.hidden_sizes) + 1

    @property
    def num_units(self) -> int:
        """Hidden plus output units (the units that can become disconnected)."""
        return sum(self.layer_sizes[1:])

    @property
    def num_synapses(self) -> int:
        """Total number of kernel entries."""
        sizes = self.layer_sizes
        return sum(a * b for a, b in zip(sizes[:-1], sizes[1:], strict=True))

    def module(self) -> nn.Module:
        return _MLP(
            layer_sizes=(*self.hidden_sizes, self.output_size),
            activation=self.activation,
            output_activation=self.output_activation,
        )

    def layer_names(self) -> tuple[str, ...]:
        return tuple(f"Dense_{i}" for i in range(self.num_layers))

    def kernels(self, tree) -> list:
        """Kernel leaves (of params or masks) in layer order; leading batch axes are kept."""
        return [tree["params"][name]["kernel"] for name in self.layer_names()]

    def biases(self, tree) -> list:
        return [tree["params"][name]["bias"] for name in self.layer_names()]

    def replace_kernels(self, tree, kernels: Sequence) -> dict:
        """Returns a copy of ``tree`` with its kernel leaves replaced (layer order)."""
        layers = dict(tree["params"])
        for name, kernel in zip(self.layer_names(), kernels, strict=True):
            layers[name] = {**layers[name], "kernel": kernel}
        return {**tree, "params": layers}

    def maskable(self) -> dict:
        """Pytree of Python bools, shaped like the params: which leaves carry real masks."""
        return {
            "params": {
                name: {"kernel": True, "bias": self.mask_biases} for name in self.layer_names()
            }
        }

    # ----- per-individual functions ----------------------------------------------------------
    def init(self, key: jax.Array) -> Params:
        """Initial parameters of one network (LeCun-normal kernels, zero biases)."""
        return self.module().init(key, jnp.zeros((self.input_size,), jnp.float32))

    def full_masks(self, params: Params) -> Masks:
        """All-``True`` masks shaped like ``params`` (:func:`synprune_jax.masks.full_masks`)."""
        return masks_lib.full_masks(params)

    def apply(self, params: Params, masks: Masks, x: jax.Array) -> jax.Array:
        """Forward pass of one masked network: ``x [..., in] -> [..., out]``."""
        return cast(jax.Array, self.module().apply(masks_lib.apply_masks(params, masks), x))

    def apply_dense(self, params: Params, x: jax.Array) -> jax.Array:
        """Forward pass with already-masked (or unmasked) parameters."""
        return cast(jax.Array, self.module().apply(params, x))
