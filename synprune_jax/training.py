"""Minibatch training of one network: :func:`fit`, shared by the library's training loops.

One call runs ``E`` epochs of an optax optimizer over fixed-shape minibatches::

    for epoch e in 0 .. E-1:                                    (lax.scan over epoch keys)
        order   = permutation(epoch_keys[e], N)                 [N]
        batches = order[: M * B].reshape(M, B)                  M = N // B (a last partial batch
                                                                of N % B examples is dropped)
        for indices in batches:                                 (lax.scan over M steps)
            loss, grads = value_and_grad(loss_fn)(params, data[indices])
            updates, opt_state = optimizer.update(grads, opt_state, params)
            params = optax.apply_updates(params, updates)
        optional: validation loss, best parameters, early stop

Everything is pure and jittable with fixed shapes; the caller jits (and vmaps over networks).
Masks, regularisers and the model itself live in ``loss_fn``: a weight that ``loss_fn``
multiplies by a zero mask gets a zero gradient. Optimizers whose updates do not vanish with the
gradient (momentum, Adam with an old state) can still move such a weight; the caller then
re-applies the mask to the returned parameters.

Example (a one-parameter least-squares fit; exact: one SGD step per minibatch of 2):
    >>> import jax, jax.numpy as jnp, optax
    >>> data = jnp.array([1.0, 2.0, 3.0, 4.0])
    >>> loss_fn = lambda w, batch: jnp.sum(w * batch)          # gradient: the batch's sum
    >>> result = fit(jax.random.key(0), jnp.float32(0.0), data, loss_fn, optax.sgd(1.0),
    ...              batch_size=2, num_epochs=3)
    >>> float(result.params)                                    # 3 epochs x -(1 + 2 + 3 + 4)
    -30.0
    >>> result.losses.shape                                     # [epochs, minibatches]
    (3, 2)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import struct

PyTree = Any


class FitResult(struct.PyTreeNode):
    """What :func:`fit` returns.

    Attributes:
        params: the trained parameters: those of the epoch with the lowest validation loss when
            ``validation_loss_fn`` is given (the initial ones if no epoch improved on
            ``+inf``), else those after the last epoch.
        opt_state: the optimizer state after the last update that ran (pass it back to continue).
        losses: ``[E, M]`` float32 training loss of every step, NaN for epochs skipped after an
            early stop.
        accumulator: the fold of ``accumulate`` over every step's auxiliary output (``None``
            without ``accumulate``).
        validation_losses: ``[E]`` validation loss after each epoch (of the frozen parameters
            once stopped); NaN without ``validation_loss_fn``.
        best_validation_loss: float32, the lowest of them (``+inf`` without validation).
        epochs_run: int32, epochs that updated the parameters (``E`` unless stopped early).

    A pytree: a ``vmap`` of :func:`fit` returns one with a leading axis on every leaf.

    Examples:
        >>> import optax
        >>> data = jnp.ones((10, 3))  # N = 10 examples of 3 features
        >>> loss_fn = lambda w, batch: jnp.mean((batch @ w) ** 2)
        >>> result = jax.eval_shape(  # shapes and dtypes only: nothing is compiled or trained
        ...     lambda key: fit(key, jnp.zeros(3), data, loss_fn, optax.sgd(0.1), batch_size=4,
        ...                     num_epochs=5),
        ...     jax.random.key(0),
        ... )
        >>> result.params.shape, result.losses.shape, result.validation_losses.shape  # M = 2
        ((3,), (5, 2), (5,))
        >>> result.losses.dtype, result.best_validation_loss.dtype, result.epochs_run.dtype
        (dtype('float32'), dtype('float32'), dtype('int32'))
    """

    params: PyTree
    opt_state: PyTree
    losses: jax.Array
    accumulator: PyTree
    validation_losses: jax.Array
    best_validation_loss: jax.Array
    epochs_run: jax.Array


def _epoch_keys(key: jax.Array, num_epochs: int | None) -> jax.Array:
    if not jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        raise TypeError(
            f"fit needs a typed PRNG key (jax.random.key), got an array of dtype {key.dtype}"
        )
    if key.ndim == 0:
        if num_epochs is None:
            raise ValueError("fit: give num_epochs with a single key (or pass [E] epoch keys)")
        return jax.random.split(key, num_epochs)
    if key.ndim != 1:
        raise ValueError(f"fit: key must be one key or [E] epoch keys, got shape {key.shape}")
    if num_epochs is not None and num_epochs != key.shape[0]:
        raise ValueError(f"fit: num_epochs={num_epochs} but {key.shape[0]} epoch keys were given")
    return key


def fit(
    key: jax.Array,
    params: PyTree,
    data: PyTree,
    loss_fn: Callable,
    optimizer: optax.GradientTransformation,
    *,
    batch_size: int,
    num_epochs: int | None = None,
    opt_state: PyTree = None,
    has_aux: bool = False,
    accumulate: Callable | None = None,
    accumulator: PyTree = None,
    validation_loss_fn: Callable | None = None,
    patience: int | None = None,
) -> FitResult:
    """Trains ``params`` on shuffled fixed-shape minibatches of ``data`` (pure, jittable).

    Epoch ``e`` visits ``data`` in the order ``jax.random.permutation(epoch_keys[e], N)``, cut
    into ``M = N // batch_size`` minibatches (the last ``N % batch_size`` examples of the
    permutation are left out of that epoch). Each minibatch makes one update (see the module
    docstring).

    Args:
        key: a typed PRNG key, split into ``num_epochs`` epoch keys
            (``jax.random.split(key, num_epochs)``); or ``[E]`` epoch keys, one permutation
            each (then ``num_epochs`` may be left out).
        params: the initial parameters (any pytree).
        data: a pytree of arrays sharing a leading axis ``[N, ...]`` (e.g. ``x`` or
            ``(images, labels)``); a minibatch is the same pytree with leading axis
            ``[batch_size]``.
        loss_fn: ``(params, batch) -> loss`` (float scalar), or ``-> (loss, aux)`` with
            ``has_aux=True``.
        optimizer: an optax gradient transformation.
        batch_size: ``B``, examples per step (static), ``1 <= B <= N``.
        num_epochs: ``E`` (static).
        opt_state: the optimizer state to continue from; ``None``: ``optimizer.init(params)``.
        has_aux: ``loss_fn`` returns ``(loss, aux)``.
        accumulate: ``(accumulator, aux) -> accumulator``, folded over the steps in order
            (needs ``has_aux``).
        accumulator: its initial value.
        validation_loss_fn: ``params -> float scalar``, evaluated after every epoch that runs;
            the parameters with the lowest value are returned (strictly lower replaces).
        patience: with ``validation_loss_fn``, stop after this many epochs in a row without a
            lower validation loss; ``None``: never stop. Epochs after the stop are still
            computed (fixed shapes, with or without ``vmap``) and discarded: parameters,
            optimizer state and accumulator keep their values.

    Returns:
        A :class:`FitResult`.

    Raises:
        TypeError: ``key`` is not a typed PRNG key (``jax.random.key``, not
            ``jax.random.PRNGKey``).
        ValueError: inconsistent arguments (at trace time): no ``num_epochs`` with a single
            key, or one that disagrees with ``[E]`` keys; ``data`` without arrays or without a
            shared leading axis; ``batch_size`` not in ``[1, N]``; ``accumulate`` without
            ``has_aux``; ``patience`` not a positive int, or without ``validation_loss_fn``.

    Examples:
        >>> import optax
        >>> data = jnp.array([1.0, 2.0, 3.0, 4.0])
        >>> loss_fn = lambda w, batch: jnp.sum(w * batch)  # an epoch moves w by -10
        >>> result = fit(jax.random.key(0), jnp.float32(0.0), data, loss_fn, optax.sgd(1.0),
        ...              batch_size=2, num_epochs=4,
        ...              validation_loss_fn=lambda w: jnp.abs(w + 10.0), patience=1)
        >>> result.validation_losses.tolist()  # w = -10, -20, then frozen at -20 (stopped)
        [0.0, 10.0, 10.0, 10.0]
        >>> float(result.params), int(result.epochs_run), float(result.best_validation_loss)
        (-10.0, 2, 0.0)
        >>> jnp.isnan(result.losses).all(axis=1).tolist()  # [E, M]: NaN once stopped
        [False, False, True, True]
    """
    epoch_keys = _epoch_keys(key, num_epochs)
    num_epochs = epoch_keys.shape[0]
    leaves = jax.tree_util.tree_leaves(data)
    if not leaves:
        raise ValueError("fit: data has no arrays")
    num_examples = leaves[0].shape[0]
    if any(leaf.shape[:1] != (num_examples,) for leaf in leaves):
        raise ValueError(
            "fit: every array of data needs the same leading axis, got shapes "
            f"{[tuple(leaf.shape) for leaf in leaves]}"
        )
    if (
        isinstance(batch_size, bool)
        or not isinstance(batch_size, int)
        or not 1 <= batch_size <= num_examples
    ):
        raise ValueError(
            f"fit: batch_size must be an int in [1, {num_examples}], got {batch_size!r}"
        )
    if accumulate is not None and not has_aux:
        raise ValueError("fit: accumulate folds the auxiliary output of loss_fn; set has_aux")
    if patience is not None and (
        validation_loss_fn is None
        or isinstance(patience, bool)
        or not isinstance(patience, int)
        or patience < 1
    ):
        raise ValueError(
            f"fit: patience must be a positive int and needs validation_loss_fn, got {patience!r}"
        )
    num_batches = num_examples // batch_size
    value_and_grad = jax.value_and_grad(loss_fn, has_aux=has_aux)
    if opt_state is None:
        opt_state = optimizer.init(params)

    def train_step(carry, indices):
        params, opt_state, accumulator = carry
        batch = jax.tree_util.tree_map(lambda leaf: leaf[indices], data)
        value, grads = value_and_grad(params, batch)
        if has_aux:
            loss, aux = value
            if accumulate is not None:
                accumulator = accumulate(accumulator, aux)
        else:
            loss = value
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state, accumulator), loss

    def train_epoch(carry, epoch_key):
        order = jax.random.permutation(epoch_key, num_examples)
        batches = order[: num_batches * batch_size].reshape(num_batches, batch_size)
        carry, losses = jax.lax.scan(train_step, carry, batches)
        return carry, jnp.asarray(losses, jnp.float32)

    if validation_loss_fn is None:
        (params, opt_state, accumulator), losses = jax.lax.scan(
            train_epoch, (params, opt_state, accumulator), epoch_keys
        )
        return FitResult(
            params=params,
            opt_state=opt_state,
            losses=losses,
            accumulator=accumulator,
            validation_losses=jnp.full((num_epochs,), jnp.nan, jnp.float32),
            best_validation_loss=jnp.asarray(jnp.inf, jnp.float32),
            epochs_run=jnp.asarray(num_epochs, jnp.int32),
        )

    def epoch_with_validation(carry, epoch_key):
        training, best, best_loss, since_best, stopped, epochs_run = carry
        trained, losses = train_epoch(training, epoch_key)
        training = jax.tree_util.tree_map(
            lambda old, new: jnp.where(stopped, old, new), training, trained
        )
        losses = jnp.where(stopped, jnp.nan, losses)
        validation = jnp.asarray(validation_loss_fn(training[0]), jnp.float32)
        improved = (validation < best_loss) & ~stopped
        best = jax.tree_util.tree_map(
            lambda old, new: jnp.where(improved, new, old), best, training[0]
        )
        best_loss = jnp.where(improved, validation, best_loss)
        epochs_run = epochs_run + (~stopped).astype(jnp.int32)
        since_best = jnp.where(improved, 0, since_best + 1).astype(jnp.int32)
        if patience is not None:
            stopped = stopped | (since_best >= patience)
        return (training, best, best_loss, since_best, stopped, epochs_run), (losses, validation)

    carry = (
        (params, opt_state, accumulator),
        params,
        jnp.asarray(jnp.inf, jnp.float32),
        jnp.int32(0),
        jnp.asarray(False),
        jnp.int32(0),
    )
    carry, (losses, validation_losses) = jax.lax.scan(epoch_with_validation, carry, epoch_keys)
    (_, opt_state, accumulator), best, best_loss, _, _, epochs_run = carry
    return FitResult(
        params=best,
        opt_state=opt_state,
        losses=losses,
        accumulator=accumulator,
        validation_losses=validation_losses,
        best_validation_loss=best_loss,
        epochs_run=epochs_run,
    )
