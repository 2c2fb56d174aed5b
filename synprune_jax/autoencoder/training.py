"""Training loops: one canonically trained autoencoder (:class:`CanonicalTraining`) and spatial
coevolution on a ring or a toroidal grid (:class:`SpatialCoevolution`). The method, the metrics
and the deviations from the published code are described in ``docs/autoencoder.md``.

Both are runner algorithms (``default_hyper``, ``init(key, hyper) -> state``,
``step(key, state, hyper) -> (state, metrics)``; one runner generation is one epoch) holding
static structure only (the config and the data); the numeric knobs are the :class:`TrainingHyper`
passed to every call, so runs that differ only in those share one compiled program in a sweep.
Both run ``num_trials`` independent trials at once (every per-trial leaf of the state has a
leading ``[num_trials]`` axis, trials are vmapped).

Example (a tiny canonical run, stepped by hand; :func:`synprune_jax.runner.run` does the same
with run directories and checkpoints):
    >>> import jax
    >>> from synprune_jax.autoencoder import BinaryClusteringSpec, make_binary_clustering
    >>> data = jax.jit(make_binary_clustering, static_argnums=1)(jax.random.key(0),
    ...     BinaryClusteringSpec(num_clusters=3, dim=40, num_train=20, num_test=10))
    >>> config = TrainingConfig(spec=AutoencoderSpec(40, 6, 3), num_epochs=2, num_trials=2,
    ...                         operator="random", schedule="fixed")
    >>> algorithm = CanonicalTraining(config, data["train"], data["test"])
    >>> hyper = algorithm.default_hyper.replace(learning_rate=1e-2)
    >>> state = jax.jit(algorithm.init)(jax.random.key(1), hyper)
    >>> state, metrics = jax.jit(algorithm.step)(jax.random.key(2), state, hyper)
    >>> state.l1_train.shape
    (2,)
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

from synprune_jax import trees
from synprune_jax.autoencoder.model import (
    ACTIVATION_POINTS,
    AutoencoderSpec,
    count_nonzero,
    init_autoencoder,
    l1_loss,
    pair_loss,
    reconstruct,
)
from synprune_jax.autoencoder.pruning import (
    accumulate_stats,
    apply_keep,
    check_operator,
    init_stats,
    prune_keep,
)
from synprune_jax.autoencoder.schedules import check_schedule, final_epoch, prune_probability
from synprune_jax.training import fit

ORDERS = ("sequential", "synchronous")
TOPOLOGIES = ("ring", "torus")
NEIGHBOURHOODS = ("von_neumann", "moore")
ADAM_EPSILON = 1e-8


def _check_int(name: str, value, minimum: int = 1) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        kind = "positive" if minimum == 1 else "non-negative"
        raise ValueError(f"{name} must be a {kind} int, got {value!r}")


def _check_choices(config, choices) -> None:
    """``choices``: ``(field, valid values)`` pairs of ``config``'s string fields."""
    for name, valid in choices:
        if getattr(config, name) not in valid:
            raise ValueError(f"{name} must be one of {list(valid)}, got {getattr(config, name)!r}")


@dataclasses.dataclass(frozen=True)
class TrainingConfig:
    """Static settings shared by both loops (shapes and structure; hashable).

    Attributes:
        spec: autoencoder sizes.
        num_epochs: epochs of a run (``T`` of the schedules derives from it).
        num_trials: independent trials run at once.
        batch_size: training mini-batch; must divide the number of training samples.
        operator: ``none | random | variance | conjunctive``.
        schedule: see :mod:`synprune_jax.autoencoder.schedules`.
        persistent: keep pruned weights at zero (mask) instead of letting them retrain.
        activation_point: ``post_relu`` (published) or ``pre_activation``.
        num_cases: cases drawn (with replacement, from the training set) by ``conjunctive``.
        eval_every: full train / test evaluation period in epochs (also at the last epoch).
        adam_beta1, adam_beta2: Adam moments.

    Raises:
        ValueError: a count that is not a positive int, an unknown ``operator``, ``schedule``
            or ``activation_point``, a non-bool ``persistent``, or an Adam beta outside [0, 1).

    Examples:
        >>> config = TrainingConfig(spec=AutoencoderSpec(40, 6, 3), num_epochs=10,
        ...                         operator="random", schedule="fixed")
        >>> config.num_trials, config.batch_size, config.activation_point
        (1, 5, 'post_relu')
        >>> TrainingConfig(operator="magnitude")
        Traceback (most recent call last):
        ...
        ValueError: unknown pruning operator 'magnitude'; valid: ['none', 'random', 'variance',
        'conjunctive']
    """

    spec: AutoencoderSpec = AutoencoderSpec()
    num_epochs: int = 400
    num_trials: int = 1
    batch_size: int = 5
    operator: str = "none"
    schedule: str = "none"
    persistent: bool = False
    activation_point: str = "post_relu"
    num_cases: int = 100
    eval_every: int = 1
    adam_beta1: float = 0.5
    adam_beta2: float = 0.999

    def __post_init__(self):
        for name in ("num_epochs", "num_trials", "batch_size", "num_cases", "eval_every"):
            _check_int(name, getattr(self, name))
        check_operator(self.operator)
        check_schedule(self.schedule)
        _check_choices(self, [("activation_point", ACTIVATION_POINTS)])
        if not isinstance(self.persistent, bool):
            raise ValueError(f"persistent must be true/false, got {self.persistent!r}")
        for name in ("adam_beta1", "adam_beta2"):
            if not 0.0 <= float(getattr(self, name)) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")


@dataclasses.dataclass(frozen=True)
class CoevolutionConfig(TrainingConfig):
    """:class:`TrainingConfig` plus the spatial grid.

    Attributes:
        num_cells: cells of the grid.
        radius: neighbourhood radius.
        order: ``sequential`` (published) or ``synchronous``.
        topology: ``ring`` (published: cells ``0..N-1`` on a circle) or ``torus`` (a
            ``rows x cols`` grid, row-major cell index ``row * cols + col``, wrapping at both
            edges).
        grid_shape: ``(rows, cols)`` of the torus, ``rows * cols == num_cells``; ``None`` picks
            the most square factorisation (``rows <= cols``; 10 cells: 2 x 5). Ring: must be
            ``None``.
        neighbourhood: torus only: ``von_neumann`` (cells within Manhattan distance ``radius``:
            ``2 r (r + 1) + 1`` cells, 5 at radius 1, as Lipizzaner's grid) or ``moore`` (within
            Chebyshev distance ``radius``: ``(2 r + 1)^2`` cells, 9 at radius 1).

    Neighbourhoods list the cell itself first; the ring needs ``2 radius + 1 <= num_cells``
    (unless ``num_cells == 1``); on a small torus, offsets that wrap onto the same cell are kept
    once, so every cell has the same :attr:`neighbourhood_size` ``n`` (``docs/autoencoder.md``).

    Raises:
        ValueError: what :class:`TrainingConfig` rejects; a ``num_cells`` that is not a positive
            int or a negative ``radius``; an unknown ``order``, ``topology`` or
            ``neighbourhood``; a ring too small for ``radius``; a ``grid_shape`` on a ring, or
            one that is not two positive ints multiplying to ``num_cells``.

    Examples:
        >>> ring = CoevolutionConfig(num_cells=5, radius=1)
        >>> ring.neighbourhood_size, ring.neighbour_offsets()
        (3, (0, 1, -1))
        >>> ring.neighbour_table()[0]  # cell 0 and its two ring neighbours
        array([0, 1, 4], dtype=int32)
        >>> torus = CoevolutionConfig(num_cells=9, topology="torus")
        >>> torus.grid_shape, torus.neighbourhood_size  # 3 x 3, von Neumann: itself and 4
        ((3, 3), 5)
        >>> torus.neighbour_table()[4]  # the centre cell: itself, up, left, right, down
        array([4, 1, 3, 5, 7], dtype=int32)
        >>> moore = CoevolutionConfig(num_cells=9, topology="torus", neighbourhood="moore")
        >>> moore.neighbourhood_size  # the whole 3 x 3 grid
        9
        >>> CoevolutionConfig(num_cells=4, radius=2)
        Traceback (most recent call last):
        ...
        ValueError: radius 2 is too large for a ring of 4 cells (need 2 radius + 1 <= num_cells)
    """

    num_cells: int = 10
    radius: int = 1
    order: str = "sequential"
    topology: str = "ring"
    grid_shape: Any = None
    neighbourhood: str = "von_neumann"

    def __post_init__(self):
        super().__post_init__()
        _check_int("num_cells", self.num_cells)
        _check_int("radius", self.radius, minimum=0)
        _check_choices(
            self, [("order", ORDERS), ("topology", TOPOLOGIES), ("neighbourhood", NEIGHBOURHOODS)]
        )
        if self.topology == "ring":
            if self.grid_shape is not None:
                raise ValueError(
                    "grid_shape applies to topology=torus only (the ring has "
                    f"num_cells cells), got {self.grid_shape!r}"
                )
            if self.num_cells > 1 and 2 * self.radius + 1 > self.num_cells:
                raise ValueError(
                    f"radius {self.radius} is too large for a ring of "
                    f"{self.num_cells} cells (need 2 radius + 1 <= num_cells)"
                )
            return
        shape, cells = self.grid_shape, self.num_cells
        if shape is None:  # the most square factorisation, rows <= cols
            rows = max(d for d in range(1, int(cells**0.5) + 1) if cells % d == 0)
            shape = (rows, cells // rows)
        if (
            not isinstance(shape, (list, tuple))
            or len(shape) != 2
            or any(not isinstance(v, int) or isinstance(v, bool) or v < 1 for v in shape)
        ):
            raise ValueError(
                f"grid_shape must be [rows, cols] of positive ints, got {self.grid_shape!r}"
            )
        if shape[0] * shape[1] != self.num_cells:
            raise ValueError(
                f"grid_shape {list(shape)} has {shape[0] * shape[1]} cells but "
                f"num_cells is {self.num_cells}"
            )
        object.__setattr__(self, "grid_shape", (int(shape[0]), int(shape[1])))

    @property
    def neighbourhood_size(self) -> int:
        """``n``: distinct cells in every neighbourhood (the cell itself included)."""
        return len(self.neighbour_offsets())

    def neighbour_offsets(self) -> tuple:
        """Ring: ``(0, 1, -1, 2, -2, ...)``. Torus: distinct ``(d_row, d_col)`` offsets, the cell
        itself first, then by distance, ``d_row``, ``d_col`` (wrapped duplicates kept once)."""
        if self.topology == "ring":
            return (
                0,
                *(sign * distance for distance in range(1, self.radius + 1) for sign in (1, -1)),
            )
        rows, cols = self.grid_shape
        span = range(-self.radius, self.radius + 1)
        norm = sum if self.neighbourhood == "von_neumann" else max
        candidates = sorted((norm((abs(dr), abs(dc))), dr, dc) for dr in span for dc in span)
        candidates = [entry for entry in candidates if entry[0] <= self.radius]
        offsets, seen = [], set()
        for _, dr, dc in candidates:
            if (dr % rows, dc % cols) not in seen:
                seen.add((dr % rows, dc % cols))
                offsets.append((dr, dc))
        return tuple(offsets)

    def neighbour_table(self):
        """``[num_cells, n]`` int32 numpy array: row ``c`` lists cell ``c``'s neighbourhood, itself
        first."""
        cells = np.arange(self.num_cells)
        if self.topology == "ring":
            offsets = np.asarray(self.neighbour_offsets())
            return ((cells[:, None] + offsets[None, :]) % self.num_cells).astype(np.int32)
        rows, cols = self.grid_shape
        offsets = np.asarray(self.neighbour_offsets()).reshape(-1, 2)
        row = (cells[:, None] // cols + offsets[None, :, 0]) % rows
        col = (cells[:, None] % cols + offsets[None, :, 1]) % cols
        return (row * cols + col).astype(np.int32)


class TrainingHyper(struct.PyTreeNode):
    """Traced numeric knobs of both loops (a pytree of float scalars: Python floats or arrays,
    cast to float32 where used; a sweep may stack them on a run axis). :func:`check_hyper`
    checks their ranges; the class itself accepts any value.

    Attributes:
        learning_rate: initial learning rate (> 0; default 1e-5, the published one).
        prune_probability: ``p0`` of the schedule, in [0, 1].
        prune_amount: fraction per tensor for the random operator, in [0, 1].
        threshold: ``theta`` of the conjunctive operator, in [0, 1].
        lr_mutation_std, lr_min, lr_max: the coevolution's learning-rate mutation (Gaussian
            standard deviation >= 0, clipped to ``[lr_min, lr_max]``, ``0 < lr_min <= lr_max``).

    Examples:
        >>> hyper = TrainingHyper(learning_rate=1e-3).replace(threshold=0.2)
        >>> hyper.learning_rate, hyper.prune_probability, hyper.threshold
        (0.001, 0.5, 0.2)
        >>> len(jax.tree_util.tree_leaves(hyper))  # seven traced leaves
        7
        >>> from synprune_jax.autoencoder.training import check_hyper
        >>> check_hyper(hyper.replace(prune_amount=1.5))
        Traceback (most recent call last):
        ...
        ValueError: prune_amount must be in [0, 1], got 1.5
    """

    learning_rate: Any = 1e-5
    prune_probability: Any = 0.5
    prune_amount: Any = 0.1
    threshold: Any = 0.1
    lr_mutation_std: Any = 1e-5
    lr_min: Any = 1e-9
    lr_max: Any = 10.0


def check_hyper(hyper: TrainingHyper) -> None:
    """Raises ``ValueError`` on out-of-range knobs (host side, before anything compiles; a sweep
    checks every run's hyper-parameters when it builds them)."""
    if not float(hyper.learning_rate) > 0:
        raise ValueError(f"learning_rate must be > 0, got {hyper.learning_rate}")
    for name in ("prune_probability", "prune_amount", "threshold"):
        value = float(getattr(hyper, name))
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{name} must be in [0, 1], got {value}")
    if float(hyper.lr_mutation_std) < 0:
        raise ValueError("lr_mutation_std must be >= 0")
    if not 0.0 < float(hyper.lr_min) <= float(hyper.lr_max):
        raise ValueError("need 0 < lr_min <= lr_max")


# ---------------------------------------------------------------------------------------------
# One pass over the training set.


def fresh_adam(learning_rate) -> optax.GradientTransformation:
    """``optax.adam`` restarted from a fresh state at every update (the coevolution's optimizer).

    The first update of a fresh Adam state is ``-lr * g / (|g| + eps)`` whatever the betas (the
    bias corrections cancel the moment decays); it is computed in that closed form
    (``eps = 1e-8``). The state is empty.

    Args:
        learning_rate: float scalar (traced allowed).

    Example:
        >>> import jax.numpy as jnp
        >>> updates, _ = fresh_adam(0.1).update({"w": jnp.array([2.0, -0.5])}, None)
        >>> [round(value, 6) for value in updates["w"].tolist()]  # -lr * sign(g), |g| >> eps
        [-0.1, 0.1]
    """

    def init(params):
        del params
        return optax.EmptyState()

    def update(updates, state, params=None):
        del params
        return jax.tree_util.tree_map(
            lambda g: -learning_rate * g / (jnp.abs(g) + ADAM_EPSILON), updates
        ), state

    return optax.GradientTransformation(init, update)


def canonical_optimizer(config: TrainingConfig, learning_rate) -> optax.GradientTransformation:
    """``optax.adam(learning_rate, b1=adam_beta1, b2=adam_beta2, eps=1e-8)``; its state's
    structure does not depend on ``learning_rate``, so each epoch builds it with that epoch's
    rate and carries the state on."""
    return optax.adam(learning_rate, b1=config.adam_beta1, b2=config.adam_beta2, eps=ADAM_EPSILON)


def train_epoch(
    key,
    params,
    masks,
    optimizer: optax.GradientTransformation,
    opt_state,
    train,
    config: TrainingConfig,
):
    """One pass over ``train`` (``[N, d]``) in shuffled mini-batches of ``config.batch_size``
    (:func:`synprune_jax.training.fit` with the single epoch key ``key``).

    Args:
        key: the epoch's key (the batch order is ``jax.random.permutation(key, N)``).
        params, masks: one autoencoder and its masks (float 0/1; used in persistent mode).
        optimizer: e.g. :func:`canonical_optimizer` or :func:`fresh_adam`.
        opt_state: its state; ``None``: a fresh one.
        train: ``[N, d]``, ``N`` a multiple of the batch size.
        config: the loop's static settings.

    Returns:
        ``(params, opt_state, stats, mean_batch_loss)``; ``stats`` are the recorded activations of
        the pass (only accumulated for the variance operator, zeros otherwise). In persistent
        mode the pruned weights are zero.
    """
    record = config.operator == "variance"

    def loss_fn(p, batch):
        if config.persistent:  # a pruned weight reads as zero and gets no gradient
            p = jax.tree_util.tree_map(lambda w, m: w * m, p, masks)
        output, recorded = reconstruct(p, batch, config.activation_point)
        return jnp.mean(jnp.abs(output - batch)), recorded

    result = fit(
        key[None],
        params,
        train,
        loss_fn,
        optimizer,
        batch_size=config.batch_size,
        opt_state=opt_state,
        has_aux=True,
        accumulate=accumulate_stats if record else None,
        accumulator=init_stats(params, config.batch_size),
    )
    params = result.params
    if config.persistent:  # optimizer state (momentum) may have moved pruned weights
        params = jax.tree_util.tree_map(lambda p, m: p * m, params, masks)
    return params, result.opt_state, result.accumulator, jnp.mean(result.losses)


def maybe_prune(
    key,
    params,
    masks,
    stats,
    train,
    epoch,
    hyper: TrainingHyper,
    config: TrainingConfig,
    final: int,
    neighbourhood_size: int = 1,
):
    """The epoch's pruning decision and application.

    Returns:
        ``(params, masks, pruned bool [])``.
    """
    if config.operator == "none" or config.schedule == "none":
        return params, masks, jnp.zeros((), bool)
    decide_key, case_key, operator_key = jax.random.split(key, 3)
    probability = prune_probability(
        config.schedule, hyper.prune_probability, epoch, final, neighbourhood_size
    )
    pruned = jax.random.uniform(decide_key) < probability
    cases = (
        train[jax.random.randint(case_key, (config.num_cases,), 0, train.shape[0])]
        if config.operator == "conjunctive"
        else None
    )
    keep = prune_keep(
        operator_key,
        config.operator,
        params,
        stats=stats,
        cases=cases,
        amount=hyper.prune_amount,
        threshold=hyper.threshold,
        activation_point=config.activation_point,
    )
    params, masks = apply_keep(params, masks, keep, config.persistent, pruned)
    return params, masks, pruned


def _float32(hyper: TrainingHyper) -> TrainingHyper:
    return jax.tree_util.tree_map(lambda x: jnp.asarray(x, jnp.float32), hyper)


# ---------------------------------------------------------------------------------------------
# Canonical training.


class CanonicalState(struct.PyTreeNode):
    """Per-trial leaves have a leading ``[num_trials]`` axis.

    Attributes:
        generation: int32 [], epochs done.
        params, masks: autoencoders ``{"encoder", "decoder"}`` ``[T, ...]``; masks float32 0/1.
        opt_state: the ``optax.adam`` state (:func:`canonical_optimizer`), leaves ``[T, ...]``.
        l1_train, l1_test: float32 [T], latest full evaluation.
        kept_encoder, kept_decoder: int32 [T], nonzero parameters at the latest evaluation.
        kept_at_prune: int32 [T], nonzero parameters right after the latest prune (all at start).
        num_prunes: int32 [T].
    """

    generation: jax.Array
    params: Any
    masks: Any
    opt_state: Any
    l1_train: jax.Array
    l1_test: jax.Array
    kept_encoder: jax.Array
    kept_decoder: jax.Array
    kept_at_prune: jax.Array
    num_prunes: jax.Array


def _summary_metrics(state, pruned, spec: AutoencoderSpec) -> dict:
    """Means over trials of ``state``'s figures (``[T]`` each) and the prune rate of ``pruned``."""
    encoder_total = spec.num_parameters("encoder")
    decoder_total = spec.num_parameters("decoder")
    total = encoder_total + decoder_total
    return {
        "l1_train": jnp.mean(state.l1_train),
        "l1_train_min": jnp.min(state.l1_train),
        "l1_train_max": jnp.max(state.l1_train),
        "l1_test": jnp.mean(state.l1_test),
        "kept_fraction": jnp.mean((state.kept_encoder + state.kept_decoder) / total),
        "kept_fraction_encoder": jnp.mean(state.kept_encoder / encoder_total),
        "kept_fraction_decoder": jnp.mean(state.kept_decoder / decoder_total),
        "kept_fraction_at_prune": jnp.mean(state.kept_at_prune / total),
        "prune_rate": jnp.mean(pruned.astype(jnp.float32)),
    }


@dataclasses.dataclass(frozen=True, eq=False)
class _Loop(trees.EqualByData):
    """What both loops share: a config and the data (float32, checked against the config),
    compared by value (configs equal, data identical by
    :func:`synprune_jax.trees.fingerprint`)."""

    config: TrainingConfig
    train: jax.Array = dataclasses.field(repr=False)
    test: jax.Array = dataclasses.field(repr=False)
    setting = "canonical"  # which published loop's T the schedules use (final_epoch)
    state_axes = 1  # leading axes of the per-network state leaves: [T] (coevolution: [T, N])

    def __post_init__(self):
        config = self.config
        for name in ("train", "test"):
            data = jnp.asarray(getattr(self, name), jnp.float32)
            object.__setattr__(self, name, data)
            if data.ndim != 2 or data.shape[1] != config.spec.input_dim:
                raise ValueError(
                    f"{name} data must be [N, {config.spec.input_dim}], got {tuple(data.shape)}"
                )
        if self.train.shape[0] % config.batch_size:
            raise ValueError(
                f"batch_size {config.batch_size} must divide the "
                f"{self.train.shape[0]} training samples"
            )

    def data_arrays(self) -> tuple:
        return self.train, self.test

    @property
    def default_hyper(self) -> TrainingHyper:
        """``TrainingHyper()``: the published learning rate and learning-rate mutation."""
        return TrainingHyper()

    @property
    def final_epoch(self) -> int:
        """``T`` of the schedules: ``num_epochs`` (canonical), ``num_epochs - 1`` (coevolution),
        at least 1."""
        return final_epoch(self.setting, self.config.num_epochs)

    def _measure(self, params) -> tuple:
        """``(l1_train, l1_test, kept_encoder, kept_decoder)`` of every network in ``params``."""
        l1 = l1_loss
        kept = lambda p: (count_nonzero(p["encoder"]), count_nonzero(p["decoder"]))  # noqa: E731
        for _ in range(self.state_axes):
            l1, kept = jax.vmap(l1, in_axes=(0, None)), jax.vmap(kept)
        return (l1(params, self.train), l1(params, self.test), *kept(params))

    def _fresh_state(self, params) -> dict:
        """The state fields both loops start from: ``params`` measured, masks all ones."""
        l1_train, l1_test, kept_encoder, kept_decoder = self._measure(params)
        return dict(
            generation=jnp.int32(0),
            params=params,
            masks=jax.tree_util.tree_map(jnp.ones_like, params),
            l1_train=l1_train,
            l1_test=l1_test,
            kept_encoder=kept_encoder,
            kept_decoder=kept_decoder,
            kept_at_prune=kept_encoder + kept_decoder,
            num_prunes=jnp.zeros(l1_train.shape, jnp.int32),
        )

    def _next_state(self, state, params, masks, kept_at_prune, pruned, **others):
        """``state`` after an epoch: the figures are measured on the full sets every
        ``eval_every`` epochs and at the last one, else carried over (``lax.cond``: only the
        taken branch runs)."""
        epoch, config = state.generation, self.config
        evaluate = ((epoch + 1) % config.eval_every == 0) | (epoch + 1 >= config.num_epochs)
        l1_train, l1_test, kept_encoder, kept_decoder = jax.lax.cond(
            evaluate,
            lambda _: self._measure(params),
            lambda _: (state.l1_train, state.l1_test, state.kept_encoder, state.kept_decoder),
            None,
        )
        return state.replace(
            params=params,
            masks=masks,
            l1_train=l1_train,
            l1_test=l1_test,
            kept_encoder=kept_encoder,
            kept_decoder=kept_decoder,
            kept_at_prune=kept_at_prune,
            num_prunes=state.num_prunes + pruned.astype(jnp.int32),
            **others,
        )


@dataclasses.dataclass(frozen=True, eq=False)
class CanonicalTraining(_Loop):
    """Canonical training with scheduled pruning, ``num_trials`` trials vmapped (the runner's
    ``Algorithm`` protocol: ``init(key, hyper) -> CanonicalState``, ``step(key, state, hyper)
    -> (state, metrics)``, one step per epoch; the module docstring steps a tiny run).

    Static structure only: two instances compare equal (and hash alike) when their configs are
    equal and their data identical (by content, :func:`synprune_jax.trees.fingerprint`), like
    :class:`SpatialCoevolution`.

    Args:
        config: :class:`TrainingConfig`.
        train: ``[N, d]`` training data (cast to float32), ``N`` a multiple of
            ``config.batch_size``, ``d = config.spec.input_dim``.
        test: ``[M, d]`` test data (cast to float32).

    Raises:
        ValueError: ``train`` or ``test`` not ``[*, d]``, or ``N`` not a multiple of the batch
            size.

    Examples:
        >>> config = TrainingConfig(spec=AutoencoderSpec(40, 6, 3), num_epochs=8, num_trials=2)
        >>> algorithm = CanonicalTraining(config, jnp.zeros((20, 40)), jnp.zeros((10, 40)))
        >>> algorithm.final_epoch  # T of the schedules: num_epochs
        8
        >>> hyper = algorithm.default_hyper.replace(learning_rate=1.0)
        >>> jnp.stack([algorithm.learning_rate(epoch, hyper) for epoch in (0, 1, 2, 7)])
        Array([1. , 1. , 0.1 , 0.001], dtype=float32)
        >>> state = jax.eval_shape(algorithm.init, jax.random.key(0), hyper)  # shapes only
        >>> state.params["encoder"]["layer_0"]["kernel"].shape, state.l1_train.shape
        ((2, 40, 6), (2,))
        >>> CanonicalTraining(config, jnp.zeros((21, 40)), jnp.zeros((10, 40)))
        Traceback (most recent call last):
        ...
        ValueError: batch_size 5 must divide the 21 training samples
    """

    def init(self, key: jax.Array, hyper: TrainingHyper) -> CanonicalState:
        """Fresh autoencoders and Adam states for every trial, evaluated."""
        config = self.config
        keys = jax.random.split(key, config.num_trials)
        params = jax.vmap(lambda k: init_autoencoder(k, config.spec))(keys)
        optimizer = canonical_optimizer(config, _float32(hyper).learning_rate)
        return CanonicalState(
            opt_state=jax.vmap(optimizer.init)(params), **self._fresh_state(params)
        )

    def learning_rate(self, epoch, hyper: TrainingHyper) -> jax.Array:
        """StepLR: ``lr0 * 0.1 ** (epoch // max(1, num_epochs // 4))`` (float32 scalar)."""
        decay_period = max(1, self.config.num_epochs // 4)
        return _float32(hyper).learning_rate * jnp.float32(0.1) ** (epoch // decay_period)

    def _trial(self, key, params, masks, opt_state, epoch, hyper):
        """One trial's epoch: train, then the pruning decision (no leading axis)."""
        train_key, prune_key = jax.random.split(key)
        optimizer = canonical_optimizer(self.config, self.learning_rate(epoch, hyper))
        params, opt_state, stats, _ = train_epoch(
            train_key, params, masks, optimizer, opt_state, self.train, self.config
        )
        params, masks, pruned = maybe_prune(
            prune_key, params, masks, stats, self.train, epoch, hyper, self.config, self.final_epoch
        )
        return params, masks, opt_state, pruned

    def step(self, key: jax.Array, state: CanonicalState, hyper: TrainingHyper):
        """One epoch of every trial; returns ``(state, metrics)`` (``docs/autoencoder.md``)."""
        hyper = _float32(hyper)
        keys = jax.random.split(key, self.config.num_trials)
        params, masks, opt_state, pruned = jax.vmap(self._trial, in_axes=(0, 0, 0, 0, None, None))(
            keys, state.params, state.masks, state.opt_state, state.generation, hyper
        )
        kept_at_prune = jnp.where(pruned, jax.vmap(count_nonzero)(params), state.kept_at_prune)
        new_state = self._next_state(
            state, params, masks, kept_at_prune, pruned, opt_state=opt_state
        )
        metrics = _summary_metrics(new_state, pruned, self.config.spec)
        metrics["learning_rate"] = self.learning_rate(state.generation, hyper)
        return new_state, metrics


# ---------------------------------------------------------------------------------------------
# Spatial coevolution.


class CoevolutionState(struct.PyTreeNode):
    """Per-trial, per-cell leaves have leading axes ``[num_trials, num_cells]``.

    Attributes:
        generation: int32 [], epochs done.
        params, masks: cell centres ``{"encoder", "decoder"}`` ``[T, N, ...]``.
        learning_rate: float32 [T, N].
        l1_train, l1_test: float32 [T, N], latest full evaluation of every centre.
        kept_encoder, kept_decoder: int32 [T, N] nonzero parameters at the latest evaluation.
        kept_at_prune: int32 [T, N] nonzero parameters of each centre right after the latest prune
            in its lineage (it travels with the networks when a cell adopts a neighbour's pair).
        num_prunes: int32 [T, N], prune events in each cell.
    """

    generation: jax.Array
    params: Any
    masks: Any
    learning_rate: jax.Array
    l1_train: jax.Array
    l1_test: jax.Array
    kept_encoder: jax.Array
    kept_decoder: jax.Array
    kept_at_prune: jax.Array
    num_prunes: jax.Array


def _take(tree, index):
    return jax.tree_util.tree_map(lambda leaf: leaf[index], tree)


def _put(tree, index, value):
    return jax.tree_util.tree_map(lambda leaf, v: leaf.at[index].set(v), tree, value)


@dataclasses.dataclass(frozen=True, eq=False)
class SpatialCoevolution(_Loop):
    """Spatial coevolution of encoders and decoders on a ring or torus, ``num_trials`` trials
    vmapped (the runner's ``Algorithm`` protocol: ``init(key, hyper) -> CoevolutionState``,
    ``step(key, state, hyper) -> (state, metrics)``, one step per epoch of every cell).
    Compared by value like :class:`CanonicalTraining`.

    Args:
        config: :class:`CoevolutionConfig` (the grid).
        train: ``[N, d]`` training data (cast to float32), ``N`` a multiple of
            ``config.batch_size`` (each cell draws one batch of that size to pick its pair).
        test: ``[M, d]`` test data (cast to float32).

    Raises:
        ValueError: as :class:`CanonicalTraining`.

    Examples:
        >>> config = CoevolutionConfig(spec=AutoencoderSpec(40, 6, 3), num_epochs=8, num_cells=5)
        >>> algorithm = SpatialCoevolution(config, jnp.zeros((20, 40)), jnp.zeros((10, 40)))
        >>> algorithm.final_epoch  # T of the schedules: num_epochs - 1
        7
        >>> algorithm.neighbours(0)  # ring of 5, radius 1: the cell itself first
        Array([0, 1, 4], dtype=int32)
        >>> state = jax.eval_shape(algorithm.init, jax.random.key(0), algorithm.default_hyper)
        >>> state.learning_rate.shape, state.params["decoder"]["layer_1"]["kernel"].shape
        ((1, 5), (1, 5, 6, 40))
    """

    config: CoevolutionConfig
    setting, state_axes = "coevolution", 2

    @functools.cached_property
    def neighbour_table(self) -> np.ndarray:
        """``[num_cells, n]`` int32: :meth:`CoevolutionConfig.neighbour_table`."""
        return self.config.neighbour_table()

    # -- one trial ------------------------------------------------------------------------------

    def init_trial(self, key):
        """Fresh centres of one trial's grid: ``{"encoder", "decoder"}`` with leading ``[N]``."""
        keys = jax.random.split(key, self.config.num_cells)
        return jax.vmap(lambda k: init_autoencoder(k, self.config.spec))(keys)

    def neighbours(self, cell) -> jax.Array:
        """``[n]`` int32 cell indices of ``cell``'s neighbourhood, itself first (ring or torus,
        see :class:`CoevolutionConfig`)."""
        return jnp.asarray(self.neighbour_table)[cell]

    def cell_epoch(
        self, key, cell, params, masks, learning_rates, kept_at_prune, epoch, hyper: TrainingHyper
    ):
        """One cell's epoch against a snapshot of its trial's grid.

        Args:
            key: the cell's key.
            cell: int32 [] cell index.
            params: the grid's centres' parameters ``[N, ...]``.
            masks: the grid's centres' masks ``[N, ...]``.
            learning_rates: float32 [N].
            kept_at_prune: int32 [N], nonzero parameters of each centre after its latest prune
                (travels with the networks).
            epoch: int32 [].
            hyper: :class:`TrainingHyper`.

        Returns:
            ``(new_centre, new_mask, new_learning_rate, new_kept_at_prune, pruned,
            selection_loss)`` for ``cell``.
        """
        config = self.config
        hyper = _float32(hyper)
        batch_key, tournament_key, train_key, prune_key, lr_key = jax.random.split(key, 5)
        neighbourhood = self.neighbours(cell)
        candidates, candidate_masks = _take((params, masks), neighbourhood)
        batch = self.train[
            jax.random.choice(batch_key, self.train.shape[0], (config.batch_size,), replace=False)
        ]
        losses = jax.vmap(
            lambda e: jax.vmap(lambda d: pair_loss(e, d, batch))(candidates["decoder"])
        )(candidates["encoder"])  # [n encoders, n decoders]
        encoder_losses = jnp.min(losses, axis=1)
        first, second = jax.random.randint(tournament_key, (2,), 0, config.neighbourhood_size)
        chosen = jnp.where(encoder_losses[first] < encoder_losses[second], first, second)
        pair, pair_masks = _take((candidates, candidate_masks), chosen)
        learning_rate = learning_rates[cell]
        pair, _, stats, _ = train_epoch(
            train_key, pair, pair_masks, fresh_adam(learning_rate), None, self.train, config
        )
        pair, pair_masks, pruned = maybe_prune(
            prune_key,
            pair,
            pair_masks,
            stats,
            self.train,
            epoch,
            hyper,
            config,
            self.final_epoch,
            config.neighbourhood_size,
        )
        new_rate = jnp.clip(
            learning_rate + hyper.lr_mutation_std * jax.random.normal(lr_key),
            hyper.lr_min,
            hyper.lr_max,
        )
        new_kept_at_prune = jnp.where(
            pruned, count_nonzero(pair), kept_at_prune[neighbourhood[chosen]]
        )
        return pair, pair_masks, new_rate, new_kept_at_prune, pruned, encoder_losses[chosen]

    def ring_epoch(
        self, key, params, masks, learning_rates, kept_at_prune, epoch, hyper: TrainingHyper
    ):
        """All cells of one trial, ``sequential`` or ``synchronous`` (``docs/autoencoder.md``).

        Returns:
            ``(params, masks, learning_rates, kept_at_prune, pruned bool [N])``.
        """
        config = self.config
        order_key, cells_key = jax.random.split(key)
        cells = jnp.arange(config.num_cells, dtype=jnp.int32)
        cell_keys = jax.vmap(lambda c: jax.random.fold_in(cells_key, c))(cells)
        if config.order == "synchronous":
            return jax.vmap(self.cell_epoch, in_axes=(0, 0, None, None, None, None, None, None))(
                cell_keys, cells, params, masks, learning_rates, kept_at_prune, epoch, hyper
            )[:5]

        order = jax.random.permutation(order_key, cells)

        def visit(carry, cell):
            params, masks, rates, kept, pruned = carry
            new, new_mask, rate, new_kept, was_pruned, _ = self.cell_epoch(
                cell_keys[cell], cell, params, masks, rates, kept, epoch, hyper
            )
            return (
                _put(params, cell, new),
                _put(masks, cell, new_mask),
                rates.at[cell].set(rate),
                kept.at[cell].set(new_kept),
                pruned.at[cell].set(was_pruned),
            ), None

        pruned = jnp.zeros((config.num_cells,), bool)
        (params, masks, learning_rates, kept_at_prune, pruned), _ = jax.lax.scan(
            visit, (params, masks, learning_rates, kept_at_prune, pruned), order
        )
        return params, masks, learning_rates, kept_at_prune, pruned

    # -- runner protocol ------------------------------------------------------------------------

    def init(self, key: jax.Array, hyper: TrainingHyper) -> CoevolutionState:
        """Fresh centres of every trial's grid, all at ``hyper.learning_rate``, evaluated."""
        config = self.config
        params = jax.vmap(self.init_trial)(jax.random.split(key, config.num_trials))
        return CoevolutionState(
            learning_rate=jnp.full(
                (config.num_trials, config.num_cells), _float32(hyper).learning_rate, jnp.float32
            ),
            **self._fresh_state(params),
        )

    def step(self, key: jax.Array, state: CoevolutionState, hyper: TrainingHyper):
        """One epoch of every cell of every trial; returns ``(state, metrics)``."""
        spec = self.config.spec
        params, masks, rates, kept_at_prune, pruned = jax.vmap(
            self.ring_epoch, in_axes=(0, 0, 0, 0, 0, None, None)
        )(
            jax.random.split(key, self.config.num_trials),
            state.params,
            state.masks,
            state.learning_rate,
            state.kept_at_prune,
            state.generation,
            _float32(hyper),
        )
        new_state = self._next_state(
            state, params, masks, kept_at_prune, pruned, learning_rate=rates
        )
        best = jnp.argmin(new_state.l1_test, axis=1).astype(jnp.int32)[:, None]  # lowest test L1
        best_cells = new_state.replace(
            **{
                name: jnp.take_along_axis(getattr(new_state, name), best, axis=1)[:, 0]
                for name in ("l1_train", "l1_test", "kept_encoder", "kept_decoder", "kept_at_prune")
            }
        )
        metrics = _summary_metrics(best_cells, pruned, spec)
        metrics["l1_train_cells_mean"] = jnp.mean(new_state.l1_train)
        total = spec.num_parameters("encoder") + spec.num_parameters("decoder")
        metrics["kept_fraction_cells_mean"] = jnp.mean(
            (new_state.kept_encoder + new_state.kept_decoder) / total
        )
        metrics["learning_rate"] = jnp.mean(rates)
        return new_state, metrics


def final_per_trial(state, spec: AutoencoderSpec) -> dict:
    """Host-side per-trial figures of a state (numpy ``[T]`` each): ``l1_train, l1_test,
    kept_fraction, kept_fraction_at_prune, num_prunes``; for the coevolution those of each
    trial's best cell (lowest test L1)."""
    l1_train = np.asarray(state.l1_train, np.float64)
    l1_test = np.asarray(state.l1_test, np.float64)
    kept = np.asarray(state.kept_encoder) + np.asarray(state.kept_decoder)
    at_prune = np.asarray(state.kept_at_prune)
    prunes = np.asarray(state.num_prunes)
    if l1_train.ndim == 2:
        best = np.argmin(l1_test, axis=1)
        rows = np.arange(l1_train.shape[0])
        l1_train, l1_test = l1_train[rows, best], l1_test[rows, best]
        kept, at_prune, prunes = kept[rows, best], at_prune[rows, best], prunes[rows, best]
    total = spec.num_parameters("encoder") + spec.num_parameters("decoder")
    return {
        "l1_train": l1_train,
        "l1_test": l1_test,
        "kept_fraction": kept / total,
        "kept_fraction_at_prune": at_prune / total,
        "num_prunes": prunes,
    }
