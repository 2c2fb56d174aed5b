"""Binary clustering data: noisy copies of random binary centroids.

``k`` centroids in ``d`` dimensions, each bit 1 with probability 0.75 (``Binomial(2, 0.5) > 0``);
a sample is a uniformly drawn centroid with exactly ``round(flip_fraction * d)`` of its bits
flipped. Train and test sets are drawn independently from the same centroids.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from synprune_jax.masks import smallest_entries


@dataclasses.dataclass(frozen=True)
class BinaryClusteringSpec:
    """Static description of a binary clustering data set.

    Attributes:
        num_clusters: number of centroids ``k``.
        dim: bits per sample ``d``.
        num_train: training samples.
        num_test: test samples.
        flip_fraction: fraction of a centroid's bits flipped in a sample (exact count
            ``round(flip_fraction * dim)``).
    """

    num_clusters: int = 10
    dim: int = 1000
    num_train: int = 1000
    num_test: int = 1000
    flip_fraction: float = 0.05

    def __post_init__(self):
        for name in ("num_clusters", "dim", "num_train", "num_test"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"data.{name} must be a positive int, got {value!r}")
        if not 0.0 <= float(self.flip_fraction) <= 1.0:
            raise ValueError(f"data.flip_fraction must be in [0, 1], got {self.flip_fraction}")

    @property
    def num_flips(self) -> int:
        return int(round(self.flip_fraction * self.dim))


def make_centroids(key: jax.Array, num_clusters: int, dim: int) -> jax.Array:
    """``[num_clusters, dim]`` float32 0/1 centroids; each bit is ``Binomial(2, 0.5) > 0``."""
    coins = jax.random.bernoulli(key, 0.5, (2, num_clusters, dim))
    return jnp.any(coins, axis=0).astype(jnp.float32)


def sample_from_centroids(
    key: jax.Array, centroids: jax.Array, num_samples: int, num_flips: int
) -> tuple[jax.Array, jax.Array]:
    """Noisy samples of ``centroids`` (``[k, d]``).

    Returns:
        ``(samples [num_samples, d] float32 0/1, labels [num_samples] int32)``; each sample is
        centroid ``labels[i]`` with exactly ``num_flips`` distinct bits flipped.
    """
    num_clusters, dim = centroids.shape
    label_key, flip_key = jax.random.split(key)
    labels = jax.random.randint(label_key, (num_samples,), 0, num_clusters)
    # the num_flips smallest uniform draws of a sample are its flipped bits (exact count)
    draws = jax.random.uniform(flip_key, (num_samples, dim))
    flip = jax.vmap(smallest_entries, in_axes=(0, None))(draws, num_flips)
    base = centroids[labels]
    samples = jnp.where(flip, 1.0 - base, base)
    return samples.astype(jnp.float32), labels.astype(jnp.int32)


def make_binary_clustering(
    key: jax.Array, spec: BinaryClusteringSpec = BinaryClusteringSpec()
) -> dict[str, jax.Array]:
    """Draws centroids and train / test sets.

    Returns:
        ``{"centroids": [k, d], "train": [num_train, d], "train_labels": [num_train],
        "test": [num_test, d], "test_labels": [num_test]}`` (float32 0/1 data, int32 labels).
    """
    centroid_key, train_key, test_key = jax.random.split(key, 3)
    centroids = make_centroids(centroid_key, spec.num_clusters, spec.dim)
    train, train_labels = sample_from_centroids(
        train_key, centroids, spec.num_train, spec.num_flips
    )
    test, test_labels = sample_from_centroids(test_key, centroids, spec.num_test, spec.num_flips)
    return {
        "centroids": centroids,
        "train": train,
        "train_labels": train_labels,
        "test": test,
        "test_labels": test_labels,
    }
