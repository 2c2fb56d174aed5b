"""The generation loop of evolutionary synthesis, in the runner's protocol (``default_hyper``,
``init(key, hyper)``, ``step(key, state, hyper)``).

``init`` trains the dense **ancestor**; one generation (:meth:`ClusterSynthesis.step`, pure,
jittable) synthesises ``num_offspring`` offspring from the kept network (vmapped), trains them,
and keeps the best if its validation accuracy stays within ``tolerance`` of the ancestor's; after
``patience`` rejections in a row the run is ``stopped`` and later generations are no-ops. Static
structure lives in :class:`SynthesisConfig` (hashable), the numbers a sweep may trace in
:class:`SynthesisHyper`. See ``docs/cluster_synthesis.md``.

Example (a tiny network on 96 random 16x16 "images" (real digits:
:func:`~synprune_jax.synthesis.data.load_digits_32`); the runner adds run directories and
checkpoints):
    >>> import jax, numpy as np
    >>> from synprune_jax.synthesis import Dataset, LeNetSpec
    >>> rng = np.random.default_rng(0)
    >>> def split(n):  # images [n, 16, 16, 1] float32, labels [n] int32
    ...     return rng.random((n, 16, 16, 1), np.float32), rng.integers(0, 10, n, np.int32)
    >>> data = Dataset(*split(96), *split(40), *split(40), num_classes=10, name="noise")
    >>> config = SynthesisConfig(network=LeNetSpec(image_size=16, widths=(3, 4, 8, 6)),
    ...                          num_offspring=2, epochs=1, ancestor_epochs=1, batch_size=32)
    >>> algorithm = ClusterSynthesis(config, data)
    >>> hyper = algorithm.default_hyper.replace(tolerance=0.05)
    >>> state = jax.jit(algorithm.init)(jax.random.key(0), hyper)
    >>> state, metrics = jax.jit(algorithm.step)(jax.random.key(1), state, hyper)
    >>> int(state.generation), sorted(metrics)[:2]
    (1, ['accepted', 'accuracy_drop'])
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import optax
from flax import struct

from synprune_jax import trees
from synprune_jax.masks import apply_masks
from synprune_jax.synthesis.data import Dataset
from synprune_jax.synthesis.encoding import (
    EncodingConfig,
    EncodingHyper,
    check_encoding_hyper,
    synthesize,
)
from synprune_jax.synthesis.lenet import LeNetSpec, Masks, Params, network_stats
from synprune_jax.training import fit


@dataclasses.dataclass(frozen=True)
class SynthesisConfig:
    """Static settings of the generation loop (hashable).

    Attributes:
        network: LeNet-5 structure (image size must match the data).
        encoding: the encoding's structure (its constants are in :class:`SynthesisHyper`).
        num_offspring: offspring synthesised per generation (the best is kept), >= 1.
        epochs: training epochs of every offspring.
        ancestor_epochs: training epochs of the dense ancestor.
        batch_size: minibatch size (the last partial batch of an epoch is dropped).
        schedule: ``"cosine"`` (default: cosine decay to 0 over each training run) or
            ``"constant"``.
        remove_unused: after synthesis also clear synapses and biases that cannot influence the
            output any more (function-preserving; default True), so synapse counts equal the
            compact network's weights.
        reinitialize: offspring start from fresh random weights (masked) instead of inheriting.
        stop_on_drop: reject offspring that drop more than ``tolerance`` (and stop after
            ``patience`` rejections in a row); False accepts every best offspring.
        patience: rejections in a row that stop the run, >= 1.
        eval_batch_size: images per forward pass in evaluation (capped at the larger of the
            validation and test sizes).

    Raises:
        ValueError: a count that is not a positive int, or an unknown ``schedule``.

    Examples:
        >>> config = SynthesisConfig(network=LeNetSpec(widths=(3, 4, 8, 6)), num_offspring=2)
        >>> config.num_offspring, config.epochs, config.encoding.mode
        (2, 8, 'both')
        >>> SynthesisConfig(schedule="linear")
        Traceback (most recent call last):
        ...
        ValueError: synthesis.schedule must be 'cosine' or 'constant', got 'linear'
    """

    network: LeNetSpec = LeNetSpec()
    encoding: EncodingConfig = EncodingConfig()
    num_offspring: int = 3
    epochs: int = 8
    ancestor_epochs: int = 15
    batch_size: int = 16
    schedule: str = "cosine"
    remove_unused: bool = True
    reinitialize: bool = False
    stop_on_drop: bool = True
    patience: int = 4
    eval_batch_size: int = 512

    def __post_init__(self):
        for name in (
            "num_offspring",
            "epochs",
            "ancestor_epochs",
            "batch_size",
            "patience",
            "eval_batch_size",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"synthesis.{name} must be a positive int, got {value!r}")
        if self.schedule not in ("cosine", "constant"):
            raise ValueError(
                f"synthesis.schedule must be 'cosine' or 'constant', got {self.schedule!r}"
            )


class SynthesisHyper(struct.PyTreeNode):
    """The numeric settings of :class:`ClusterSynthesis` (float scalars; a sweep traces them).
    :func:`check_hyper` checks their ranges.

    Attributes:
        learning_rate: Adam step size (peak of the schedule), > 0 (default 3e-3).
        tolerance: largest accepted drop of validation accuracy below the ancestor's, in [0, 1]
            (fraction: 0.02 = 2 points; default).
        encoding: the encoding's constants (:class:`~synprune_jax.synthesis.encoding.
            EncodingHyper`; default: the published encoding).

    Examples:
        >>> hyper = SynthesisHyper(tolerance=0.05)
        >>> hyper.learning_rate, hyper.tolerance, hyper.encoding.synapse_rate
        (0.003, 0.05, 1.0)
        >>> gentler = hyper.replace(encoding=hyper.encoding.replace(synapse_rate=0.5))
        >>> gentler.encoding.synapse_rate
        0.5
        >>> from synprune_jax.synthesis import check_hyper
        >>> check_hyper(hyper.replace(tolerance=2.0))
        Traceback (most recent call last):
        ...
        ValueError: synthesis.tolerance must be in [0, 1], got 2.0
    """

    learning_rate: float = 3e-3
    tolerance: float = 0.02
    encoding: EncodingHyper = struct.field(default_factory=EncodingHyper)


def check_hyper(hyper: SynthesisHyper) -> None:
    """Raises ``ValueError`` on out-of-range settings (host side, before anything compiles)."""
    if not float(hyper.learning_rate) > 0:
        raise ValueError(f"synthesis.learning_rate must be > 0, got {float(hyper.learning_rate)}")
    if not 0.0 <= float(hyper.tolerance) <= 1.0:
        raise ValueError(f"synthesis.tolerance must be in [0, 1], got {float(hyper.tolerance)}")
    check_encoding_hyper(hyper.encoding)


class SynthesisState(struct.PyTreeNode):
    """Algorithm state (no PRNG keys; the runner derives them from seed and generation).

    Attributes:
        params: the kept network's parameters (masked-out entries are zero).
        masks: its masks (kernel: synapses, bias: clusters).
        generation: int32 scalar.
        validation_accuracy, test_accuracy: the kept network's accuracies (float32).
        ancestor_validation_accuracy, ancestor_test_accuracy: the ancestor's (float32).
        ancestor_synapses, ancestor_clusters: int32; ancestor_flops: float32.
        rejections: int32, rejected generations in a row.
        stopped: bool, the stop criterion fired.
    """

    params: Params
    masks: Masks
    generation: jax.Array
    validation_accuracy: jax.Array
    test_accuracy: jax.Array
    ancestor_validation_accuracy: jax.Array
    ancestor_test_accuracy: jax.Array
    ancestor_synapses: jax.Array
    ancestor_clusters: jax.Array
    ancestor_flops: jax.Array
    rejections: jax.Array
    stopped: jax.Array


def _pad_to_multiple(images, labels, multiple: int):
    """Pads to a multiple of ``multiple``; returns images, labels and a validity mask."""
    count = labels.shape[0]
    padded = -(-count // multiple) * multiple
    extra = padded - count
    images = jnp.concatenate([images, jnp.zeros((extra, *images.shape[1:]), images.dtype)])
    labels = jnp.concatenate([labels, jnp.zeros((extra,), labels.dtype)])
    valid = jnp.arange(padded) < count
    return images, labels, valid


@dataclasses.dataclass(frozen=True, eq=False)
class ClusterSynthesis(trees.EqualByData):
    """Evolutionary synthesis of a sparse LeNet-5 (the runner's ``Algorithm`` protocol).

    Holds only static structure: two instances are equal (and hash alike) when their configs are
    equal and their data identical (by content, :func:`synprune_jax.trees.fingerprint`), so a
    sweep compiles runs that differ only in :class:`SynthesisHyper` once.

    Args:
        config: static settings.
        data: the dataset (host arrays; kept as constants of the compiled programs).

    Attributes (derived from ``data``, constants of the compiled programs):
        train_images: ``[N, S, S, C]`` float32; train_labels: ``[N]`` int32.
        validation, test: ``(images, labels, valid)`` padded to a multiple of ``eval_batch``
            (``valid`` marks the real examples).
        eval_batch: images per evaluation pass.

    Raises:
        ValueError: images not ``[N, S, S, C]`` of the network, a class count other than the
            network's, or fewer training examples than ``batch_size``.

    Examples:
        >>> from synprune_jax.synthesis import Dataset
        >>> rng = np.random.default_rng(0)
        >>> def split(n):  # images [n, 16, 16, 1] float32, labels [n] int32
        ...     return rng.random((n, 16, 16, 1), np.float32), rng.integers(0, 10, n, np.int32)
        >>> data = Dataset(*split(96), *split(40), *split(30), num_classes=10, name="noise")
        >>> config = SynthesisConfig(network=LeNetSpec(image_size=16, widths=(3, 4, 8, 6)))
        >>> algorithm = ClusterSynthesis(config, data)
        >>> algorithm.train_images.shape, algorithm.eval_batch  # the larger split: 40
        ((96, 16, 16, 1), 40)
        >>> images, labels, valid = algorithm.test  # 30 examples padded to 40
        >>> images.shape, int(valid.sum())
        ((40, 16, 16, 1), 30)
        >>> ClusterSynthesis(SynthesisConfig(), data)  # the default network wants 32x32
        Traceback (most recent call last):
        ...
        ValueError: images must be [N, 32, 32, 1], got (96, 16, 16, 1)
    """

    config: SynthesisConfig
    data: Dataset = dataclasses.field(repr=False)
    # derived from ``data`` in __post_init__
    train_images: jax.Array = dataclasses.field(init=False, repr=False)
    train_labels: jax.Array = dataclasses.field(init=False, repr=False)
    validation: tuple = dataclasses.field(init=False, repr=False)
    test: tuple = dataclasses.field(init=False, repr=False)
    eval_batch: int = dataclasses.field(init=False, repr=False)

    def __post_init__(self):
        config, data = self.config, self.data
        spec = config.network
        spec.check_images(data.train_images)
        if data.num_classes != spec.num_classes:
            raise ValueError(
                f"the data have {data.num_classes} classes, the network {spec.num_classes}"
            )
        if len(data.train_labels) < config.batch_size:
            raise ValueError(
                f"batch_size {config.batch_size} exceeds the {len(data.train_labels)}"
                " training examples"
            )
        size = min(config.eval_batch_size, max(len(data.validation_labels), len(data.test_labels)))
        object.__setattr__(self, "train_images", jnp.asarray(data.train_images, jnp.float32))
        object.__setattr__(self, "train_labels", jnp.asarray(data.train_labels, jnp.int32))
        object.__setattr__(self, "eval_batch", size)
        for split in ("validation", "test"):
            object.__setattr__(
                self,
                split,
                _pad_to_multiple(
                    jnp.asarray(getattr(data, f"{split}_images"), jnp.float32),
                    jnp.asarray(getattr(data, f"{split}_labels"), jnp.int32),
                    size,
                ),
            )

    def data_arrays(self) -> tuple:
        return tuple(self.data)

    @property
    def spec(self) -> LeNetSpec:
        """The network's structure (``config.network``)."""
        return self.config.network

    @property
    def default_hyper(self) -> SynthesisHyper:
        """``SynthesisHyper()``: learning rate 3e-3, tolerance 0.02, the published encoding."""
        return SynthesisHyper()

    # ----- training and evaluation (one network; vmap adds the offspring axis) -------------------
    def loss(self, params: Params, masks: Masks, images: jax.Array, labels: jax.Array) -> jax.Array:
        """Mean cross-entropy of the masked network on ``images [B, S, S, C]``, ``labels [B]``."""
        logits = self.spec.apply(params, masks, images)
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

    def optimizer(self, num_steps: int, learning_rate) -> optax.GradientTransformation:
        """Adam with the configured schedule over ``num_steps`` updates, peak ``learning_rate``."""
        if self.config.schedule == "cosine":
            return optax.adam(optax.cosine_decay_schedule(learning_rate, num_steps))
        return optax.adam(learning_rate)

    def train(
        self, key: jax.Array, params: Params, masks: Masks, epochs: int, learning_rate
    ) -> Params:
        """``epochs`` epochs of Adam on shuffled minibatches (:func:`synprune_jax.training.fit`
        with ``key`` split into the epoch keys); returns masked parameters.

        Masked weights get zero gradients (the forward pass zeroes them) and a fresh Adam state
        leaves them unchanged; they are zeroed again at the end.
        """
        num_batches = self.train_labels.shape[0] // self.config.batch_size
        optimizer = self.optimizer(epochs * num_batches, learning_rate)
        result = fit(
            key,
            params,
            (self.train_images, self.train_labels),
            lambda p, batch: self.loss(p, masks, *batch),
            optimizer,
            batch_size=self.config.batch_size,
            num_epochs=epochs,
        )
        return apply_masks(result.params, masks)

    def accuracy(self, params: Params, masks: Masks, split: str = "validation") -> jax.Array:
        """Fraction of correctly classified examples of ``"validation"`` or ``"test"`` (float32)."""
        images, labels, valid = self.validation if split == "validation" else self.test
        chunks = labels.shape[0] // self.eval_batch

        def correct(args):
            chunk_images, chunk_labels, chunk_valid = args
            predicted = jnp.argmax(self.spec.apply(params, masks, chunk_images), axis=-1)
            return jnp.sum((predicted == chunk_labels) & chunk_valid, dtype=jnp.int32)

        reshaped = (
            images.reshape(chunks, self.eval_batch, *images.shape[1:]),
            labels.reshape(chunks, self.eval_batch),
            valid.reshape(chunks, self.eval_batch),
        )
        total = jnp.sum(jax.lax.map(correct, reshaped))
        return total.astype(jnp.float32) / jnp.sum(valid).astype(jnp.float32)

    # ----- protocol ----------------------------------------------------------------------------
    def init(self, key: jax.Array, hyper: SynthesisHyper) -> SynthesisState:
        """Trains the dense ancestor (generation 0)."""
        key_init, key_train = jax.random.split(key)
        params = self.spec.init(key_init)
        masks = self.spec.full_masks(params)
        params = self.train(
            key_train, params, masks, self.config.ancestor_epochs, hyper.learning_rate
        )
        stats = network_stats(self.spec, masks)
        validation = self.accuracy(params, masks, "validation")
        test = self.accuracy(params, masks, "test")
        return SynthesisState(
            params=params,
            masks=masks,
            generation=jnp.zeros((), jnp.int32),
            validation_accuracy=validation,
            test_accuracy=test,
            ancestor_validation_accuracy=validation,
            ancestor_test_accuracy=test,
            ancestor_synapses=stats.synapses,
            ancestor_clusters=stats.clusters,
            ancestor_flops=stats.flops,
            rejections=jnp.zeros((), jnp.int32),
            stopped=jnp.zeros((), jnp.bool_),
        )

    def offspring(self, key: jax.Array, state: SynthesisState, hyper: SynthesisHyper):
        """Synthesises and trains ``num_offspring`` offspring of the kept network.

        Returns:
            ``(params, masks, validation_accuracy [K], synapses [K])``, params / masks with a
            leading ``[K]`` axis.
        """

        def one(child_key):
            key_masks, key_init, key_train = jax.random.split(child_key, 3)
            masks = synthesize(
                key_masks,
                state.params,
                state.masks,
                self.config.encoding,
                hyper.encoding,
                self.spec if self.config.remove_unused else None,
            )
            params = self.spec.init(key_init) if self.config.reinitialize else state.params
            params = apply_masks(params, masks)
            params = self.train(key_train, params, masks, self.config.epochs, hyper.learning_rate)
            return (
                params,
                masks,
                self.accuracy(params, masks, "validation"),
                network_stats(self.spec, masks).synapses,
            )

        return jax.vmap(one)(jax.random.split(key, self.config.num_offspring))

    def _generation(self, key: jax.Array, state: SynthesisState, hyper: SynthesisHyper):
        params, masks, accuracies, synapses = self.offspring(key, state, hyper)
        best_accuracy = jnp.max(accuracies)
        candidates = jnp.where(accuracies == best_accuracy, synapses, jnp.iinfo(jnp.int32).max)
        best = jnp.argmin(candidates)  # highest accuracy, ties to fewer synapses
        child_params, child_masks = jax.tree_util.tree_map(lambda leaf: leaf[best], (params, masks))
        floor = state.ancestor_validation_accuracy - hyper.tolerance
        accept = best_accuracy >= floor if self.config.stop_on_drop else jnp.asarray(True)
        rejections = jnp.where(accept, 0, state.rejections + 1).astype(jnp.int32)
        new_params, new_masks = trees.select(
            accept, (child_params, child_masks), (state.params, state.masks)
        )
        new_state = state.replace(
            params=new_params,
            masks=new_masks,
            validation_accuracy=jnp.where(accept, best_accuracy, state.validation_accuracy),
            test_accuracy=jnp.where(
                accept, self.accuracy(child_params, child_masks, "test"), state.test_accuracy
            ),
            rejections=rejections,
            stopped=jnp.asarray(self.config.stop_on_drop) & (rejections >= self.config.patience),
        )
        return new_state, accept, best_accuracy, synapses[best]

    def _idle(self, key: jax.Array, state: SynthesisState, hyper: SynthesisHyper):
        del key, hyper
        return (
            state,
            jnp.asarray(False),
            jnp.asarray(jnp.nan, jnp.float32),
            jnp.asarray(0, jnp.int32),
        )

    def step(self, key: jax.Array, state: SynthesisState, hyper: SynthesisHyper):
        """One generation (a no-op once ``state.stopped``); returns ``(state, metrics)``."""
        state, accepted, offspring_accuracy, offspring_synapses = jax.lax.cond(
            state.stopped,
            functools.partial(self._idle, hyper=hyper),
            functools.partial(self._generation, hyper=hyper),
            key,
            state,
        )
        state = state.replace(generation=state.generation + 1)
        return state, self.metrics(state, accepted, offspring_accuracy, offspring_synapses)

    def metrics(self, state: SynthesisState, accepted, offspring_accuracy, offspring_synapses):
        """Scalar metrics of the kept network after a generation (``docs/cluster_synthesis.md``)."""
        stats = network_stats(self.spec, state.masks)
        reduction = lambda ancestor, now: (
            jnp.asarray(ancestor, jnp.float32)  # noqa: E731
            / jnp.maximum(jnp.asarray(now, jnp.float32), 1.0)
        )
        return {
            "validation_accuracy": state.validation_accuracy,
            "test_accuracy": state.test_accuracy,
            "ancestor_test_accuracy": state.ancestor_test_accuracy,
            "accuracy_drop": state.ancestor_test_accuracy - state.test_accuracy,
            "synapses": stats.synapses,
            "effective_synapses": stats.effective_synapses,
            "clusters": stats.clusters,
            "flops": stats.flops,
            "synapse_reduction": reduction(state.ancestor_synapses, stats.synapses),
            "cluster_reduction": reduction(state.ancestor_clusters, stats.clusters),
            "flops_reduction": reduction(state.ancestor_flops, stats.flops),
            "offspring_validation_accuracy": offspring_accuracy,
            "offspring_synapses": offspring_synapses,
            "accepted": accepted,
            "stopped": state.stopped,
        }
