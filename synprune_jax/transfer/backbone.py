"""A small CNN backbone, pretrained in-project on the source classes and then frozen.

Architecture (per image ``[H, W, C]``)::

    conv 3x3 (c1) -> relu -> 2x2 average pool -> conv 3x3 (c2) -> relu    = features [H/2, W/2, c2]
    pretraining classifier: flatten -> dense(num_source_classes)

The classifier is linear, so the frozen features carry the class information themselves (8x8
digits, channels ``(16, 8)``: ``4 x 4 x 8 = 128`` features). Pretraining: Adam on softmax
cross-entropy with minibatches (:func:`synprune_jax.training.fit`).
"""

from __future__ import annotations

from typing import cast

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from synprune_jax.training import fit


class DigitsCNN(nn.Module):
    """Two-convolution feature extractor with a linear pretraining classifier."""

    channels: tuple[int, int]
    num_classes: int

    @nn.compact
    def __call__(self, images: jax.Array, features_only: bool = False) -> jax.Array:
        """``[B, H, W, C]`` -> features ``[B, H/2, W/2, c2]`` or logits ``[B, num_classes]``."""
        x = nn.relu(nn.Conv(self.channels[0], (3, 3), name="conv_0")(images))
        x = nn.avg_pool(x, (2, 2), strides=(2, 2))
        x = nn.relu(nn.Conv(self.channels[1], (3, 3), name="conv_1")(x))
        if features_only:
            return x
        return nn.Dense(self.num_classes, name="classifier")(x.reshape(x.shape[0], -1))


def pretrain_cnn(images: np.ndarray, labels: np.ndarray, config):
    """Pretrains :class:`DigitsCNN` on the source task; returns the frozen feature function.

    Args:
        images: ``[N, H, W, C]`` float32 source images.
        labels: ``[N]`` int source labels (any values; remapped to ``0..K-1``).
        config: a :class:`~synprune_jax.transfer.data.DataConfig` (channels, epochs, batch size,
            learning rate, seed).

    Returns:
        ``(extract, info)``: ``extract(images [n, H, W, C]) -> features [n, H/2, W/2, c2]`` numpy
        float32 (frozen parameters, jitted, batched by 512), and a dict with the held-out
        source accuracy (20 % of the source images are kept out of pretraining to measure it).
    """
    classes = np.unique(labels)
    targets = np.searchsorted(classes, labels).astype(np.int32)
    rng = np.random.default_rng(config.seed)
    order = rng.permutation(images.shape[0])
    num_holdout = max(1, images.shape[0] // 5)
    holdout, train = order[:num_holdout], order[num_holdout:]
    model = DigitsCNN(channels=tuple(config.cnn_channels), num_classes=int(classes.size))
    init_key, shuffle_key = jax.random.split(jax.random.key(config.seed))
    params = model.init(init_key, jnp.zeros((1, *images.shape[1:]), jnp.float32))
    optimizer = optax.adam(config.pretrain_learning_rate)
    train_images = jnp.asarray(images[train])
    train_targets = jnp.asarray(targets[train])

    def loss_fn(params, batch):
        logits = model.apply(params, batch[0])
        return optax.softmax_cross_entropy_with_integer_labels(logits, batch[1]).mean()

    params = jax.jit(
        lambda params, key: (
            fit(
                key,
                params,
                (train_images, train_targets),
                loss_fn,
                optimizer,
                batch_size=min(config.pretrain_batch_size, train.size),
                num_epochs=config.pretrain_epochs,
            ).params
        )
    )(params, shuffle_key)

    @jax.jit
    def features(x):
        return model.apply(params, x, features_only=True)

    @jax.jit
    def predict(x):
        return jnp.argmax(cast(jax.Array, model.apply(params, x)), axis=-1)

    def extract(batch_images: np.ndarray) -> np.ndarray:
        parts = [
            np.asarray(features(jnp.asarray(batch_images[i : i + 512], jnp.float32)))
            for i in range(0, batch_images.shape[0], 512)
        ]
        return np.concatenate(parts, axis=0).astype(np.float32)

    accuracy = float(np.mean(np.asarray(predict(jnp.asarray(images[holdout]))) == targets[holdout]))
    info = {
        "backbone": "cnn",
        "backbone_source_classes": [int(c) for c in classes],
        "backbone_holdout_accuracy": accuracy,
        "backbone_num_pretrain": int(train.size),
    }
    return extract, info
