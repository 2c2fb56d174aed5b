"""The generation loop of evolutionary synthesis, in the runner's ``init`` / ``step`` protocol.

``init`` trains the dense **ancestor** for ``ancestor_epochs`` epochs and records its accuracy,
synapse, cluster and FLOP counts. One generation (:meth:`ClusterSynthesis.step`, pure, jittable)::

    offspring masks  = synthesize(parent params, parent masks)          x num_offspring (vmapped)
    offspring params = parent params (inherited) or a fresh init (reinitialize=True), masked
    train each offspring for `epochs` epochs (optax Adam, cross-entropy, masked forward pass)
    best offspring   = highest validation accuracy, ties to fewer synapses
    accept it if its validation accuracy >= ancestor's - tolerance (or always, stop_on_drop=False)

A rejected offspring leaves the parent in place; after ``patience`` rejections in a row the run is
``stopped`` (a flag in the state and the metrics): later generations change nothing and cost
almost nothing (``lax.cond``). The kept network is therefore always within the tolerance.

Data live in the algorithm (constants of the compiled program); the state holds the kept network,
the ancestor's figures and counters only, so checkpoints stay small.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib

import jax
import jax.numpy as jnp
import optax
from flax import struct

from synprune_jax.synthesis.data import Dataset
from synprune_jax.synthesis.encoding import EncodingConfig, synthesize
from synprune_jax.synthesis.lenet import LeNetSpec, Masks, Params, network_stats

_tree_map = jax.tree_util.tree_map


@dataclasses.dataclass(frozen=True)
class SynthesisConfig:
    """Static settings of the generation loop.

    Attributes:
        network: LeNet-5 structure (image size must match the data).
        encoding: the encoding constants.
        num_offspring: offspring synthesised per generation (the best is kept), >= 1.
        epochs: training epochs of every offspring.
        ancestor_epochs: training epochs of the dense ancestor.
        batch_size: minibatch size (the last partial batch of an epoch is dropped).
        learning_rate: Adam step size (peak of the schedule).
        schedule: ``"cosine"`` (default: cosine decay to 0 over each training run) or
            ``"constant"``.
        remove_unused: after synthesis also clear synapses and biases that cannot influence the
            output any more (function-preserving; default True), so synapse counts equal the
            compact network's weights.
        reinitialize: offspring start from fresh random weights (masked) instead of inheriting.
        tolerance: largest accepted drop of validation accuracy below the ancestor's (fraction:
            0.02 = 2 points).
        stop_on_drop: reject offspring that drop more than ``tolerance`` (and stop after
            ``patience`` rejections in a row); False accepts every best offspring.
        patience: rejections in a row that stop the run, >= 1.
        eval_batch_size: images per forward pass in evaluation.
    """

    network: LeNetSpec = LeNetSpec()
    encoding: EncodingConfig = EncodingConfig()
    num_offspring: int = 3
    epochs: int = 8
    ancestor_epochs: int = 15
    batch_size: int = 16
    learning_rate: float = 3e-3
    schedule: str = "cosine"
    remove_unused: bool = True
    reinitialize: bool = False
    tolerance: float = 0.02
    stop_on_drop: bool = True
    patience: int = 4
    eval_batch_size: int = 512

    def __post_init__(self):
        for name in ("num_offspring", "epochs", "ancestor_epochs", "batch_size", "patience",
                     "eval_batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"synthesis.{name} must be a positive int, got {value!r}")
        if not self.learning_rate > 0:
            raise ValueError(f"synthesis.learning_rate must be > 0, got {self.learning_rate}")
        if self.schedule not in ("cosine", "constant"):
            raise ValueError(f"synthesis.schedule must be 'cosine' or 'constant', "
                             f"got {self.schedule!r}")
        if not 0.0 <= self.tolerance <= 1.0:
            raise ValueError(f"synthesis.tolerance must be in [0, 1], got {self.tolerance}")


@struct.dataclass
class SynthesisState:
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


TRACED_SYNTHESIS_FIELDS = ("learning_rate", "tolerance")
TRACED_ENCODING_FIELDS = ("synapse_factor", "cluster_factor", "truncation", "synapse_rate",
                          "cluster_rate")


@struct.dataclass
class SynthesisHyper:
    """The numeric settings of :class:`ClusterSynthesis` that a sweep may trace (vmap over).

    ``learning_rate`` and ``tolerance`` of :class:`SynthesisConfig`; ``synapse_factor``,
    ``cluster_factor``, ``truncation``, ``synapse_rate``, ``cluster_rate`` of
    :class:`~synprune_jax.synthesis.encoding.EncodingConfig`.
    """

    learning_rate: float
    tolerance: float
    synapse_factor: float
    cluster_factor: float
    truncation: float
    synapse_rate: float
    cluster_rate: float


def _with_fields(frozen, values: dict):
    """A shallow copy of a frozen dataclass with ``values`` set as they are (possibly tracers):
    ``__post_init__`` range checks are skipped, since a sweep has already built, and so checked,
    every run's own config."""
    bound = copy.copy(frozen)
    for name, value in values.items():
        object.__setattr__(bound, name, value)
    return bound


class ClusterSynthesis:
    """Evolutionary synthesis of a sparse LeNet-5 (the runner's ``Algorithm`` protocol).

    Args:
        config: static settings.
        data: the dataset (host arrays; kept as constants of the compiled programs).
    """

    def __init__(self, config: SynthesisConfig, data: Dataset):
        spec = config.network
        spec.check_images(data.train_images)
        if data.num_classes != spec.num_classes:
            raise ValueError(f"the data have {data.num_classes} classes, the network "
                             f"{spec.num_classes}")
        if len(data.train_labels) < config.batch_size:
            raise ValueError(f"batch_size {config.batch_size} exceeds the {len(data.train_labels)}"
                             " training examples")
        self.config = config
        self.spec = spec
        self.train_images = jnp.asarray(data.train_images, jnp.float32)
        self.train_labels = jnp.asarray(data.train_labels, jnp.int32)
        size = min(config.eval_batch_size, max(len(data.validation_labels),
                                               len(data.test_labels)))
        self.eval_batch = size
        self.validation = _pad_to_multiple(jnp.asarray(data.validation_images, jnp.float32),
                                           jnp.asarray(data.validation_labels, jnp.int32), size)
        self.test = _pad_to_multiple(jnp.asarray(data.test_images, jnp.float32),
                                     jnp.asarray(data.test_labels, jnp.int32), size)

    # ----- training and evaluation (one network; vmap adds the offspring axis) -------------------
    def loss(self, params: Params, masks: Masks, images: jax.Array,
             labels: jax.Array) -> jax.Array:
        """Mean cross-entropy of the masked network on ``images [B, S, S, C]``, ``labels [B]``."""
        logits = self.spec.apply(params, masks, images)
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

    def optimizer(self, num_steps: int) -> optax.GradientTransformation:
        """Adam with the configured schedule over ``num_steps`` updates."""
        if self.config.schedule == "cosine":
            return optax.adam(optax.cosine_decay_schedule(self.config.learning_rate, num_steps))
        return optax.adam(self.config.learning_rate)

    def train(self, key: jax.Array, params: Params, masks: Masks, epochs: int) -> Params:
        """``epochs`` epochs of Adam on shuffled minibatches; returns masked parameters.

        Masked weights get zero gradients (the forward pass zeroes them) and a fresh Adam state
        leaves them unchanged; they are zeroed again at the end.
        """
        num_batches = self.train_labels.shape[0] // self.config.batch_size
        grad = jax.grad(self.loss)
        optimizer = self.optimizer(epochs * num_batches)

        def batch_step(carry, indices):
            params, opt_state = carry
            grads = grad(params, masks, self.train_images[indices], self.train_labels[indices])
            updates, opt_state = optimizer.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), None

        def epoch(carry, epoch_key):
            order = jax.random.permutation(epoch_key, self.train_labels.shape[0])
            batches = order[:num_batches * self.config.batch_size].reshape(
                num_batches, self.config.batch_size)
            return jax.lax.scan(batch_step, carry, batches)[0], None

        carry = (params, optimizer.init(params))
        params, _ = jax.lax.scan(epoch, carry, jax.random.split(key, epochs))[0]
        return _tree_map(lambda p, m: jnp.where(m, p, jnp.zeros_like(p)), params, masks)

    def accuracy(self, params: Params, masks: Masks, split: str = "validation") -> jax.Array:
        """Fraction of correctly classified examples of ``"validation"`` or ``"test"`` (float32)."""
        images, labels, valid = self.validation if split == "validation" else self.test
        chunks = labels.shape[0] // self.eval_batch

        def correct(args):
            chunk_images, chunk_labels, chunk_valid = args
            predicted = jnp.argmax(self.spec.apply(params, masks, chunk_images), axis=-1)
            return jnp.sum((predicted == chunk_labels) & chunk_valid, dtype=jnp.int32)

        reshaped = (images.reshape(chunks, self.eval_batch, *images.shape[1:]),
                    labels.reshape(chunks, self.eval_batch), valid.reshape(chunks, self.eval_batch))
        total = jnp.sum(jax.lax.map(correct, reshaped))
        return total.astype(jnp.float32) / jnp.sum(valid).astype(jnp.float32)

    # ----- sweeps (sweeps.HyperAdapter) --------------------------------------------------------
    @property
    def sweep_hyper(self) -> SynthesisHyper:
        """The run's own traced settings (its config's values)."""
        values = {name: getattr(self.config, name) for name in TRACED_SYNTHESIS_FIELDS}
        values.update({name: getattr(self.config.encoding, name)
                       for name in TRACED_ENCODING_FIELDS})
        return SynthesisHyper(**values)

    def sweep_static(self):
        """Hashable key of what fixes the compiled program: the config without the traced
        fields, and a SHA-1 of the data (the data are constants of the program)."""
        if getattr(self, "_data_digest", None) is None:
            digest = hashlib.sha1()
            for array in (self.train_images, self.train_labels, *self.validation, *self.test):
                digest.update(str(array.shape).encode())
                digest.update(memoryview(jax.device_get(array)).tobytes())
            self._data_digest = digest.hexdigest()
        encoding = dataclasses.replace(self.config.encoding,
                                       **{name: 0.5 for name in TRACED_ENCODING_FIELDS})
        config = dataclasses.replace(self.config, learning_rate=1.0, tolerance=0.0,
                                     encoding=encoding)
        return ("cluster_synthesis", config, self._data_digest)

    def _bound(self, hyper: SynthesisHyper) -> "ClusterSynthesis":
        encoding = _with_fields(self.config.encoding,
                                {name: getattr(hyper, name) for name in TRACED_ENCODING_FIELDS})
        config = _with_fields(self.config, {
            **{name: getattr(hyper, name) for name in TRACED_SYNTHESIS_FIELDS},
            "encoding": encoding})
        bound = copy.copy(self)
        bound.config = config
        return bound

    def init_with(self, key: jax.Array, hyper: SynthesisHyper) -> SynthesisState:
        """:meth:`init` with the given (possibly traced) settings."""
        return self._bound(hyper).init(key)

    def step_with(self, key: jax.Array, state: SynthesisState, hyper: SynthesisHyper):
        """:meth:`step` with the given (possibly traced) settings."""
        return self._bound(hyper).step(key, state)

    # ----- protocol ----------------------------------------------------------------------------
    def init(self, key: jax.Array) -> SynthesisState:
        """Trains the dense ancestor (generation 0)."""
        key_init, key_train = jax.random.split(key)
        params = self.spec.init(key_init)
        masks = self.spec.full_masks(params)
        params = self.train(key_train, params, masks, self.config.ancestor_epochs)
        stats = network_stats(self.spec, masks)
        validation = self.accuracy(params, masks, "validation")
        test = self.accuracy(params, masks, "test")
        return SynthesisState(
            params=params, masks=masks, generation=jnp.zeros((), jnp.int32),
            validation_accuracy=validation, test_accuracy=test,
            ancestor_validation_accuracy=validation, ancestor_test_accuracy=test,
            ancestor_synapses=stats.synapses, ancestor_clusters=stats.clusters,
            ancestor_flops=stats.flops, rejections=jnp.zeros((), jnp.int32),
            stopped=jnp.zeros((), jnp.bool_))

    def offspring(self, key: jax.Array, state: SynthesisState):
        """Synthesises and trains ``num_offspring`` offspring of the kept network.

        Returns:
            ``(params, masks, validation_accuracy [K], synapses [K])``, params / masks with a
            leading ``[K]`` axis.
        """
        def one(child_key):
            key_masks, key_init, key_train = jax.random.split(child_key, 3)
            masks = synthesize(key_masks, state.params, state.masks, self.config.encoding,
                               self.spec if self.config.remove_unused else None)
            params = self.spec.init(key_init) if self.config.reinitialize else state.params
            params = _tree_map(lambda p, m: jnp.where(m, p, jnp.zeros_like(p)), params, masks)
            params = self.train(key_train, params, masks, self.config.epochs)
            return (params, masks, self.accuracy(params, masks, "validation"),
                    network_stats(self.spec, masks).synapses)

        return jax.vmap(one)(jax.random.split(key, self.config.num_offspring))

    def _generation(self, key: jax.Array, state: SynthesisState):
        params, masks, accuracies, synapses = self.offspring(key, state)
        best_accuracy = jnp.max(accuracies)
        candidates = jnp.where(accuracies == best_accuracy, synapses, jnp.iinfo(jnp.int32).max)
        best = jnp.argmin(candidates)  # highest accuracy, ties to fewer synapses
        child_params = _tree_map(lambda leaf: leaf[best], params)
        child_masks = _tree_map(lambda leaf: leaf[best], masks)
        floor = state.ancestor_validation_accuracy - self.config.tolerance
        accept = best_accuracy >= floor if self.config.stop_on_drop else jnp.asarray(True)
        pick = lambda new, old: jnp.where(accept, new, old)
        rejections = jnp.where(accept, 0, state.rejections + 1).astype(jnp.int32)
        new_params = _tree_map(pick, child_params, state.params)
        new_masks = _tree_map(pick, child_masks, state.masks)
        test = jnp.where(accept, self.accuracy(child_params, child_masks, "test"),
                         state.test_accuracy)
        new_state = state.replace(
            params=new_params, masks=new_masks,
            validation_accuracy=pick(best_accuracy, state.validation_accuracy),
            test_accuracy=test, rejections=rejections,
            stopped=jnp.asarray(self.config.stop_on_drop) & (rejections >= self.config.patience))
        return new_state, accept, best_accuracy, synapses[best]

    def _idle(self, key: jax.Array, state: SynthesisState):
        del key
        return (state, jnp.asarray(False), jnp.asarray(jnp.nan, jnp.float32),
                jnp.asarray(0, jnp.int32))

    def step(self, key: jax.Array, state: SynthesisState):
        """One generation (a no-op once ``state.stopped``); returns ``(state, metrics)``."""
        state, accepted, offspring_accuracy, offspring_synapses = jax.lax.cond(
            state.stopped, self._idle, self._generation, key, state)
        state = state.replace(generation=state.generation + 1)
        return state, self.metrics(state, accepted, offspring_accuracy, offspring_synapses)

    def metrics(self, state: SynthesisState, accepted, offspring_accuracy, offspring_synapses):
        """Scalar metrics of the kept network after a generation (see ``docs/cluster_synthesis.md``)."""
        stats = network_stats(self.spec, state.masks)
        as_float = lambda value: jnp.asarray(value, jnp.float32)
        return {
            "validation_accuracy": state.validation_accuracy,
            "test_accuracy": state.test_accuracy,
            "ancestor_test_accuracy": state.ancestor_test_accuracy,
            "accuracy_drop": state.ancestor_test_accuracy - state.test_accuracy,
            "synapses": stats.synapses,
            "effective_synapses": stats.effective_synapses,
            "clusters": stats.clusters,
            "flops": stats.flops,
            "synapse_reduction": as_float(state.ancestor_synapses) / jnp.maximum(
                as_float(stats.synapses), 1.0),
            "cluster_reduction": as_float(state.ancestor_clusters) / jnp.maximum(
                as_float(stats.clusters), 1.0),
            "flops_reduction": state.ancestor_flops / jnp.maximum(stats.flops, 1.0),
            "offspring_validation_accuracy": offspring_accuracy,
            "offspring_synapses": offspring_synapses,
            "accepted": accepted,
            "stopped": state.stopped,
        }
