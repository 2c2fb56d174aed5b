"""Pruning schedules: the probability of pruning in epoch ``t`` (:func:`prune_probability`).

The formulas of the :data:`SCHEDULES` are tabled in ``docs/autoencoder.md``; as published,
``decrease`` starts at 1 whatever ``p0``, and the final epoch ``T`` is ``epochs`` in the canonical
loop and ``epochs - 1`` in the coevolution (:func:`final_epoch`).
"""

from __future__ import annotations

import jax.numpy as jnp

SCHEDULES = (
    "none",
    "fixed",
    "increase",
    "decrease",
    "population",
    "final_n",
    "exponential",
    "prune_after",
)


def check_schedule(name: str) -> None:
    if name not in SCHEDULES:
        raise ValueError(f"unknown pruning schedule {name!r}; valid: {list(SCHEDULES)}")


def prune_probability(
    schedule: str, base_probability, epoch, final_epoch, neighbourhood_size=1
) -> jnp.ndarray:
    """Probability of pruning in ``epoch`` (float32 scalar; traced arguments allowed).

    Args:
        schedule: one of :data:`SCHEDULES` (static).
        base_probability: ``p0``.
        epoch: ``t``, 0-based.
        final_epoch: ``T`` (> 0).
        neighbourhood_size: ``n`` (``population`` schedule only).
    """
    check_schedule(schedule)
    p0 = jnp.asarray(base_probability, jnp.float32)
    t = jnp.asarray(epoch, jnp.float32)
    final = jnp.asarray(final_epoch, jnp.float32)
    n = jnp.asarray(neighbourhood_size, jnp.float32)
    if schedule == "none":
        return jnp.zeros((), jnp.float32)
    if schedule == "fixed":
        return p0
    if schedule == "increase":
        return t * (p0 / final)
    if schedule == "decrease":
        return 1.0 - t * (p0 / final)
    if schedule == "population":
        return t * (p0 / (final * n))
    if schedule == "final_n":
        return jnp.where(t < final - 0.25 * final, 0.0, p0).astype(jnp.float32)
    if schedule == "exponential":
        return p0 * (1.0 - jnp.exp(-2.0 * t / final))
    return jnp.where(t < final, 0.0, p0).astype(jnp.float32)  # prune_after


def final_epoch(setting: str, num_epochs: int) -> int:
    """``T`` as the published loops pass it: ``epochs`` (canonical), ``epochs - 1``
    (coevolution), at least 1."""
    return max(1, num_epochs if setting == "canonical" else num_epochs - 1)
