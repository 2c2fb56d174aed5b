"""Pareto ensembles and feature / neuron importance (host numpy, for reports;
docs/mo_transfer.md, "Ensembles and importance").

Band ``p``: the front members whose **validation** accuracy is at least the ``p``-th percentile
of the front's; its majority-vote **test** accuracy is set against the best single model (highest
validation accuracy, ties to the sparser one), so no test figure chooses a model.
"""

from __future__ import annotations

import numpy as np

DEFAULT_BANDS = (0.0, 50.0, 75.0, 90.0)


def majority_vote(predictions: np.ndarray, probabilities: np.ndarray) -> np.ndarray:
    """Ensemble labels ``[N]`` from member ``predictions [K, N]`` and ``probabilities [K, N, C]``.

    Ties between classes with the same number of votes go to the larger summed probability.
    """
    num_classes = probabilities.shape[-1]
    votes = np.zeros(predictions.shape[1:] + (num_classes,))
    for member in predictions:
        votes[np.arange(member.shape[0]), member] += 1.0
    summed = probabilities.sum(axis=0)
    # votes dominate: summed probability < K <= one vote's weight times (K + 1)
    score = votes * (probabilities.shape[0] + 1) + summed
    return np.argmax(score, axis=-1)


def best_single_index(val_accuracy: np.ndarray, active_fraction: np.ndarray) -> int:
    """Highest validation accuracy; ties go to the smaller active fraction, then lower index."""
    return int(np.lexsort((np.arange(val_accuracy.size), active_fraction, -val_accuracy))[0])


def ensemble_table(
    val_accuracy: np.ndarray,
    active_fraction: np.ndarray,
    test_predictions: np.ndarray,
    test_probabilities: np.ndarray,
    test_labels: np.ndarray,
    bands=DEFAULT_BANDS,
) -> list[dict]:
    """One row per percentile band: members, ensemble vs best single test accuracy.

    Args:
        val_accuracy: ``[K]`` validation accuracy of the front members.
        active_fraction: ``[K]``.
        test_predictions: ``[K, N]`` int. test_probabilities: ``[K, N, C]``.
        test_labels: ``[N]`` int.
        bands: percentiles ``p`` in ``[0, 100]``.

    Returns:
        list of dicts with ``percentile``, ``num_members``, ``min_val_accuracy``,
        ``ensemble_test_accuracy``, ``best_single_test_accuracy``, ``mean_member_test_accuracy``,
        ``mean_active_fraction``.
    """
    member_accuracy = (test_predictions == test_labels[None, :]).mean(axis=1)
    best = best_single_index(val_accuracy, active_fraction)
    rows = []
    for band in bands:
        threshold = np.percentile(val_accuracy, band)
        members = np.flatnonzero(val_accuracy >= threshold - 1e-12)
        vote = majority_vote(test_predictions[members], test_probabilities[members])
        rows.append(
            {
                "percentile": float(band),
                "num_members": int(members.size),
                "min_val_accuracy": float(val_accuracy[members].min()),
                "ensemble_test_accuracy": float(np.mean(vote == test_labels)),
                "best_single_test_accuracy": float(member_accuracy[best]),
                "mean_member_test_accuracy": float(member_accuracy[members].mean()),
                "mean_active_fraction": float(active_fraction[members].mean()),
            }
        )
    return rows


def importance(genomes: np.ndarray, val_accuracy: np.ndarray) -> np.ndarray:
    """Accuracy-weighted survival frequency ``[L]`` of each genome position across the front:
    ``importance[l] = sum_k acc_k * g_k[l] / sum_k acc_k``, in ``[0, 1]``."""
    genomes = np.asarray(genomes, np.float64)
    weights = np.asarray(val_accuracy, np.float64)
    if weights.sum() <= 0:
        weights = np.ones_like(weights)
    return (weights[:, None] * genomes).sum(axis=0) / weights.sum()
