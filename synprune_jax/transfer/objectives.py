"""Objectives of a trained head, all maximised: ``accuracy``, ``sparsity`` (1 - active
fraction), ``auroc`` (validation vs OOD inputs by temperature-scaled max softmax), ``neg_loss``
(minus the cross-entropy); docs/mo_transfer.md, "What it does", step 4, defines them.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

OBJECTIVES = ("accuracy", "sparsity", "auroc", "neg_loss")

# Hypervolume reference point per objective (a value every useful head exceeds).
DEFAULT_REFERENCE = {"accuracy": 0.0, "sparsity": 0.0, "auroc": 0.0, "neg_loss": -10.0}


def check_names(names) -> tuple[str, ...]:
    """``names`` as a tuple; ``ValueError`` unless they are distinct names from OBJECTIVES."""
    names = tuple(names)
    if not names or len(set(names)) != len(names) or not set(names) <= set(OBJECTIVES):
        raise ValueError(
            f"objectives must be distinct names from {list(OBJECTIVES)}, got {list(names)}"
        )
    return names


def max_softmax_score(logits: jax.Array, temperature: float) -> jax.Array:
    """``log max softmax(logits / T)`` per row: ``[N, C] -> [N]``.

    The logarithm is a monotone transform of the maximum softmax probability, so rankings (and
    AUROC) are unchanged; unlike the probability itself, it keeps its resolution in float32 when
    ``T`` is large and every probability is close to ``1 / C``.
    """
    scaled = logits / temperature
    return jnp.max(scaled, axis=-1) - jax.nn.logsumexp(scaled, axis=-1)


def auroc(positive: jax.Array, negative: jax.Array) -> jax.Array:
    """Exact area under the ROC curve, ``P(s+ > s-) + P(s+ == s-) / 2`` (jittable).

    Computed from average ranks (the Mann-Whitney statistic), ``O((A + B) log(A + B))``.

    Args:
        positive: ``[A]`` scores of the positive (in-distribution) samples.
        negative: ``[B]`` scores of the negative (out-of-distribution) samples.

    Returns:
        float32 scalar in ``[0, 1]``; NaN scores count as the lowest.
    """
    num_positive, num_negative = positive.shape[0], negative.shape[0]
    scores = jnp.concatenate([positive, negative]).astype(jnp.float32)
    scores = jnp.where(jnp.isnan(scores), -jnp.inf, scores)
    ordered = jnp.sort(scores)
    below = jnp.searchsorted(ordered, scores, side="left")
    up_to = jnp.searchsorted(ordered, scores, side="right")
    ranks = (below + up_to + 1).astype(jnp.float32) / 2.0  # 1-based average ranks
    rank_sum = jnp.sum(ranks[:num_positive])
    statistic = rank_sum - num_positive * (num_positive + 1) / 2.0
    return statistic / (num_positive * num_negative)


def classification_metrics(logits: jax.Array, labels: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(accuracy, mean cross-entropy)`` of ``logits [N, C]`` against ``labels [N]``."""
    accuracy = jnp.mean(jnp.argmax(logits, axis=-1) == labels)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    return accuracy, loss


def objective_vector(metrics: dict, names: tuple[str, ...]) -> jax.Array:
    """Picks ``names`` from per-head ``metrics`` (``accuracy``, ``sparsity``, ``auroc``,
    ``loss``; each ``[...]``) as maximised objectives ``[..., M]``."""
    table = {
        "accuracy": metrics["accuracy"],
        "sparsity": metrics["sparsity"],
        "auroc": metrics["auroc"],
        "neg_loss": -metrics["loss"],
    }
    return jnp.stack([table[name].astype(jnp.float32) for name in names], axis=-1)
