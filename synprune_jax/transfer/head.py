"""The sparse head, its genome, and vmapped optax training with early stopping.

Head (per individual; ``F`` features, ``H`` hidden neurons, ``C`` classes)::

    h      = relu((x * input_mask) @ W1 + b1) * hidden_mask        [N, H]
    logits = h @ W2 + b2                                            [N, C]

The genome is a bool vector ``[L]``: the input-feature mask (``genome="input"``, ``L = F``), the
hidden-neuron mask (``"hidden"``, ``L = H``) or both concatenated (``"both"``, ``L = F + H``).

Training (:func:`train_head`: :func:`synprune_jax.training.fit` with early stopping on the
validation loss, the best epoch's parameters kept) is written per individual and vmapped over the
population (:func:`train_population`). The initialisation key comes from the genome
(:func:`genome_key`), the minibatch order from the seed only (:func:`shuffle_key`), so a genome
always trains to the same head and the population shares its minibatches (docs/mo_transfer.md,
"What it does", steps 2-3).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import optax

from synprune_jax.training import fit

GENOME_KINDS = ("input", "hidden", "both")
OPTIMIZERS = ("adam", "sgd_nesterov")
ZOBRIST_SEED = 0x5EED
SHUFFLE_DATA = 0x5F1E


@dataclasses.dataclass(frozen=True)
class HeadConfig:
    """Static shape of the head and of its genome.

    Attributes:
        num_features: ``F``. num_hidden: ``H``. num_classes: ``C``.
        genome: ``"input"``, ``"hidden"`` or ``"both"`` (what the genome masks).
    """

    num_features: int
    num_hidden: int
    num_classes: int
    genome: str = "input"

    def __post_init__(self):
        if self.genome not in GENOME_KINDS:
            raise ValueError(
                f"head.genome must be one of {list(GENOME_KINDS)}, got {self.genome!r}"
            )
        for name in ("num_features", "num_hidden"):
            if getattr(self, name) < 1:
                raise ValueError(f"head.{name} must be >= 1")
        if self.num_classes < 2:
            raise ValueError("the head needs at least two classes")

    @property
    def genome_length(self) -> int:
        """``L``."""
        return {
            "input": self.num_features,
            "hidden": self.num_hidden,
            "both": self.num_features + self.num_hidden,
        }[self.genome]

    def split(self, genome: jax.Array) -> tuple[jax.Array, jax.Array]:
        """``[L]`` bool -> ``(input_mask [F], hidden_mask [H])`` (float32 0/1)."""
        ones_in = jnp.ones((self.num_features,), jnp.float32)
        ones_hidden = jnp.ones((self.num_hidden,), jnp.float32)
        genome = genome.astype(jnp.float32)
        if self.genome == "input":
            return genome, ones_hidden
        if self.genome == "hidden":
            return ones_in, genome
        return genome[: self.num_features], genome[self.num_features :]


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """How every head is trained: the static part (the learning rate, momentum and seed are
    numeric knobs, :class:`~synprune_jax.transfer.problem.ProblemHyper`).

    Attributes:
        optimizer: ``"adam"`` or ``"sgd_nesterov"`` (SGD with Nesterov momentum).
        epochs: maximum epochs. batch_size: minibatch size (capped at the train size).
        patience: epochs without a lower validation loss before a head stops.
    """

    optimizer: str = "adam"
    epochs: int = 30
    batch_size: int = 64
    patience: int = 5

    def __post_init__(self):
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(
                f"train.optimizer must be one of {list(OPTIMIZERS)}, got {self.optimizer!r}"
            )
        for name in ("epochs", "batch_size", "patience"):
            if getattr(self, name) < 1:
                raise ValueError(f"train.{name} must be >= 1")

    def make_optimizer(self, learning_rate, momentum) -> optax.GradientTransformation:
        """The optimizer with step size ``learning_rate`` and Nesterov ``momentum`` (SGD only;
        both may be traced)."""
        if self.optimizer == "adam":
            return optax.adam(learning_rate)
        return optax.sgd(learning_rate, momentum=momentum, nesterov=True)


def init_head(key: jax.Array, config: HeadConfig) -> dict:
    """He-normal kernels, zero biases: ``{"w1": [F, H], "b1": [H], "w2": [H, C], "b2": [C]}``."""
    key_1, key_2 = jax.random.split(key)
    f, h, c = config.num_features, config.num_hidden, config.num_classes
    return {
        "w1": jax.random.normal(key_1, (f, h)) * jnp.sqrt(2.0 / f),
        "b1": jnp.zeros((h,)),
        "w2": jax.random.normal(key_2, (h, c)) * jnp.sqrt(2.0 / h),
        "b2": jnp.zeros((c,)),
    }


def head_logits(
    params: dict, input_mask: jax.Array, hidden_mask: jax.Array, features: jax.Array
) -> jax.Array:
    """``features [N, F] -> logits [N, C]`` of one masked head."""
    # mask the kernel rather than the features: under vmap the features stay unbatched, so a
    # population's first layer is one large matrix product instead of P small ones
    kernel = input_mask[:, None] * params["w1"]
    hidden = jax.nn.relu(features @ kernel + params["b1"][None, :])
    return (hidden * hidden_mask[None, :]) @ params["w2"] + params["b2"][None, :]


def genome_hash(genome: jax.Array) -> jax.Array:
    """64-bit Zobrist hash of a bool genome ``[L]`` as ``[2]`` uint32 (XOR of position words)."""
    words = jax.random.bits(jax.random.key(ZOBRIST_SEED), (2, genome.shape[-1]), jnp.uint32)
    chosen = jnp.where(genome[None, :], words, jnp.uint32(0))
    return jax.lax.reduce(chosen, jnp.uint32(0), jax.lax.bitwise_xor, (1,))


def genome_key(seed: int, genome: jax.Array) -> jax.Array:
    """The training key of a genome, ``fold_in(fold_in(key(seed), h1), h2)`` with ``(h1, h2)``
    its :func:`genome_hash` (depends only on ``seed`` and the genome)."""
    words = genome_hash(genome)
    return jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), words[0]), words[1])


def shuffle_key(seed: int) -> jax.Array:
    """The key of the minibatch order of every head trained with ``seed``."""
    return jax.random.fold_in(jax.random.key(seed), SHUFFLE_DATA)


def train_head(
    key: jax.Array,
    shuffle_key: jax.Array,
    genome: jax.Array,
    train_x: jax.Array,
    train_y: jax.Array,
    val_x: jax.Array,
    val_y: jax.Array,
    head: HeadConfig,
    train: TrainConfig,
    optimizer: optax.GradientTransformation,
) -> tuple[dict, jax.Array]:
    """Trains one head with early stopping on the validation loss.

    Args:
        key: initialisation key.
        shuffle_key: key of the minibatch order (:func:`train_population` shares it across the
            population: under ``vmap`` each minibatch meets all heads' kernels in one product).
        genome: ``[L]`` bool.
        train_x: ``[N, F]``; train_y: ``[N]`` int. val_x: ``[V, F]``; val_y: ``[V]`` int.
        head, train: static configs.
        optimizer: ``train.make_optimizer(learning_rate, momentum)`` (the two may be traced).

    Returns:
        ``(params, epochs_run)``: the parameters of the epoch with the lowest validation loss,
        and the number of epochs that updated the parameters (int32 scalar).
    """
    input_mask, hidden_mask = head.split(genome)

    def loss(params, batch):
        logits = head_logits(params, input_mask, hidden_mask, batch[0])
        return optax.softmax_cross_entropy_with_integer_labels(logits, batch[1]).mean()

    result = fit(
        shuffle_key,
        init_head(key, head),
        (train_x, train_y),
        loss,
        optimizer,
        batch_size=min(train.batch_size, train_x.shape[0]),
        num_epochs=train.epochs,
        validation_loss_fn=lambda params: loss(params, (val_x, val_y)),
        patience=train.patience,
    )
    return result.params, result.epochs_run


def train_population(
    seed,
    genomes: jax.Array,
    train_x,
    train_y,
    val_x,
    val_y,
    head: HeadConfig,
    train: TrainConfig,
    optimizer: optax.GradientTransformation,
) -> tuple[dict, jax.Array]:
    """:func:`train_head` vmapped over ``genomes [P, L]``.

    Each head is initialised from its genome's key (:func:`genome_key`); the minibatch order
    comes from :func:`shuffle_key` (``seed`` only), shared by the population. ``seed`` (int or
    uint32 scalar) may be traced, and so may the learning rate / momentum inside ``optimizer``.

    Returns:
        ``(params, epochs_run)`` with a leading ``[P]`` axis on every leaf.
    """
    keys = jax.vmap(lambda g: genome_key(seed, g))(genomes)
    order_key = shuffle_key(seed)

    def one(key, genome):
        return train_head(
            key, order_key, genome, train_x, train_y, val_x, val_y, head, train, optimizer
        )

    return jax.vmap(one)(keys, genomes)
