"""The binary-clustering autoencoder: encoder ``d -> h -> z`` (ReLU), decoder ``z -> h -> d``.

Parameters are plain pytrees (no flax module), one network per dict::

    encoder = {"layer_0": {"kernel": [d, h], "bias": [h]}, "layer_1": {"kernel": [h, z], ...}}
    decoder = {"layer_0": {"kernel": [z, h], "bias": [h]}, "layer_1": {"kernel": [h, d], ...}}

Kernels are ``[in, out]``: column ``j`` holds the incoming weights of unit ``j``. The encoder's
two layers and the decoder's first layer use ReLU, the decoder's last layer a sigmoid. Weights
and biases are initialised like ``torch.nn.Linear`` (uniform in ``±1/sqrt(in)``), as in the
published PyTorch code. The loss is the mean absolute error (L1) between input and
reconstruction.

Every forward function also returns the *recorded activations* of each linear layer (``[B,
units]``), which the pruning operators score: ``"post_relu"`` (published) records a ReLU layer
after its ReLU, ``"pre_activation"`` the linear output; the sigmoid layer is recorded before it.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

ACTIVATION_POINTS = ("post_relu", "pre_activation")
LAYERS = ("layer_0", "layer_1")


@dataclasses.dataclass(frozen=True)
class AutoencoderSpec:
    """Layer sizes of one autoencoder (hashable). The published model: ``input_dim=1000,
    hidden_dim=30, bottleneck_dim=10`` (the "small" variant, :data:`SMALL`, has
    ``bottleneck_dim=2``).

    Attributes:
        input_dim: ``d``, the data's dimension (encoder input, decoder output).
        hidden_dim: ``h``, the hidden layer of both networks.
        bottleneck_dim: ``z``, the code (encoder output, decoder input).

    Raises:
        ValueError: a size that is not a positive int (a bool is not one).

    Examples:
        >>> spec = AutoencoderSpec(input_dim=40, hidden_dim=6, bottleneck_dim=3)
        >>> spec.encoder_sizes, spec.decoder_sizes
        ((40, 6, 3), (3, 6, 40))
        >>> spec.num_parameters("encoder"), spec.num_parameters("decoder")  # kernels + biases
        (267, 304)
        >>> AutoencoderSpec(hidden_dim=0)
        Traceback (most recent call last):
        ...
        ValueError: model.hidden_dim must be a positive int, got 0
    """

    input_dim: int = 1000
    hidden_dim: int = 30
    bottleneck_dim: int = 10

    def __post_init__(self):
        for name in ("input_dim", "hidden_dim", "bottleneck_dim"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"model.{name} must be a positive int, got {value!r}")

    @property
    def encoder_sizes(self) -> tuple[int, int, int]:
        """``(d, h, z)``: the encoder's unit counts, input first."""
        return (self.input_dim, self.hidden_dim, self.bottleneck_dim)

    @property
    def decoder_sizes(self) -> tuple[int, int, int]:
        """``(z, h, d)``: the decoder's unit counts, input first."""
        return (self.bottleneck_dim, self.hidden_dim, self.input_dim)

    def num_parameters(self, network: str) -> int:
        """Weights plus biases of ``network``, ``"encoder"`` or ``"decoder"``.

        Raises:
            ValueError: any other name.
        """
        if network not in ("encoder", "decoder"):
            raise ValueError(f"network must be 'encoder' or 'decoder', got {network!r}")
        sizes = self.encoder_sizes if network == "encoder" else self.decoder_sizes
        return sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:], strict=True))


SMALL = AutoencoderSpec(bottleneck_dim=2)


def _init_layer(key: jax.Array, fan_in: int, fan_out: int) -> dict:
    kernel_key, bias_key = jax.random.split(key)
    bound = 1.0 / jnp.sqrt(jnp.float32(fan_in))
    return {
        "kernel": jax.random.uniform(kernel_key, (fan_in, fan_out), jnp.float32, -bound, bound),
        "bias": jax.random.uniform(bias_key, (fan_out,), jnp.float32, -bound, bound),
    }


def init_network(key: jax.Array, sizes: tuple[int, int, int]) -> dict:
    """Two linear layers ``sizes[0] -> sizes[1] -> sizes[2]``."""
    keys = jax.random.split(key, 2)
    return {
        name: _init_layer(k, a, b)
        for name, k, a, b in zip(LAYERS, keys, sizes[:-1], sizes[1:], strict=True)
    }


def init_autoencoder(key: jax.Array, spec: AutoencoderSpec) -> dict:
    """``{"encoder": ..., "decoder": ...}`` for one autoencoder (no leading axis)."""
    encoder_key, decoder_key = jax.random.split(key)
    return {
        "encoder": init_network(encoder_key, spec.encoder_sizes),
        "decoder": init_network(decoder_key, spec.decoder_sizes),
    }


def network_forward(
    layers: dict, x: jax.Array, *, final: str, activation_point: str = "post_relu"
) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
    """Runs a two-layer network.

    Args:
        layers: ``{"layer_0": ..., "layer_1": ...}``.
        x: ``[B, in]``.
        final: ``"relu"`` (encoder) or ``"sigmoid"`` (decoder) for the last layer.
        activation_point: see the module docstring.

    Returns:
        ``(output [B, out], (recorded_0 [B, units_0], recorded_1 [B, units_1]))``.
    """
    if activation_point not in ACTIVATION_POINTS:
        raise ValueError(f"activation_point must be one of {ACTIVATION_POINTS}")
    first = x @ layers["layer_0"]["kernel"] + layers["layer_0"]["bias"][None, :]
    hidden = jax.nn.relu(first)
    second = hidden @ layers["layer_1"]["kernel"] + layers["layer_1"]["bias"][None, :]
    output = jax.nn.relu(second) if final == "relu" else jax.nn.sigmoid(second)
    recorded_first = hidden if activation_point == "post_relu" else first
    recorded_second = output if (final == "relu" and activation_point == "post_relu") else second
    return output, (recorded_first, recorded_second)


def reconstruct(
    params: dict, x: jax.Array, activation_point: str = "post_relu"
) -> tuple[jax.Array, dict]:
    """Encodes and decodes ``x`` (``[B, d]``).

    Returns:
        ``(reconstruction [B, d], {"encoder": (a0, a1), "decoder": (a0, a1)})`` with the
        recorded activations of every linear layer (``[B, units]`` each).
    """
    code, encoder_acts = network_forward(
        params["encoder"], x, final="relu", activation_point=activation_point
    )
    output, decoder_acts = network_forward(
        params["decoder"], code, final="sigmoid", activation_point=activation_point
    )
    return output, {"encoder": encoder_acts, "decoder": decoder_acts}


def l1_loss(params: dict, x: jax.Array) -> jax.Array:
    """Mean absolute reconstruction error over ``x`` (``[B, d]``): a scalar."""
    output, _ = reconstruct(params, x)
    return jnp.mean(jnp.abs(output - x))


def pair_loss(encoder: dict, decoder: dict, x: jax.Array) -> jax.Array:
    """:func:`l1_loss` of the autoencoder made of ``encoder`` and ``decoder``."""
    return l1_loss({"encoder": encoder, "decoder": decoder}, x)


def count_nonzero(tree) -> jax.Array:
    """Number of nonzero entries over all leaves (int32 scalar): the parameters kept."""
    return sum(
        (jnp.sum(leaf != 0, dtype=jnp.int32) for leaf in jax.tree_util.tree_leaves(tree)),
        jnp.zeros((), jnp.int32),
    )
