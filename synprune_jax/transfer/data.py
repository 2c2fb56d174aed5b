"""Transfer data (host numpy, once per experiment): the digits default or an ``.npz`` of your
own, per-class splits, backbone features, the feature cache.

The result is a :class:`TransferData` of **features** for the target task's train / validation /
test splits and the out-of-distribution (OOD) validation / test sets. docs/mo_transfer.md ("What
it does", step 1; "Your own data") describes the default classes and the ``.npz`` layouts:
``labels [N]`` with ``images [N, H, W(, C)]`` or ``features [N, F]``, optionally
``ood_images`` / ``ood_features``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Callable

import numpy as np

BACKBONES = ("cnn", "pixels")


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Where the data come from and how they are split (hashable; part of the cache key).

    Attributes:
        source: ``"digits"`` or a path to an ``.npz`` (see module docstring).
        source_classes: classes used only to pretrain the backbone.
        target_classes: classes of the transfer task (label ``k`` becomes ``index(k)``).
        ood_classes: classes used as out-of-distribution inputs.
        val_fraction: fraction of each target class in the validation split.
        test_fraction: fraction of each target class in the test split.
        seed: seed of the splits and of backbone pretraining.
        backbone: ``"cnn"`` (pretrained in-project on the source classes, frozen) or
            ``"pixels"`` (the flattened images are the features).
        cnn_channels: channels of the two 3x3 convolutions of the CNN.
        pretrain_epochs: epochs of backbone pretraining.
        pretrain_batch_size: minibatch size of backbone pretraining.
        pretrain_learning_rate: Adam learning rate of backbone pretraining.
    """

    source: str = "digits"
    source_classes: tuple[int, ...] = (0, 1, 2, 4, 6)
    target_classes: tuple[int, ...] = (3, 5, 8, 9)
    ood_classes: tuple[int, ...] = (7,)
    val_fraction: float = 0.25
    test_fraction: float = 0.25
    seed: int = 0
    backbone: str = "cnn"
    cnn_channels: tuple[int, int] = (16, 8)
    pretrain_epochs: int = 30
    pretrain_batch_size: int = 64
    pretrain_learning_rate: float = 3e-3

    def __post_init__(self):
        if len(self.target_classes) < 2:
            raise ValueError("data.target_classes needs at least two classes")
        every = (*self.source_classes, *self.target_classes, *self.ood_classes)
        if len(set(every)) != len(every):
            raise ValueError(
                "data.source_classes, target_classes and ood_classes must be "
                f"disjoint, each class listed once; got {list(every)}"
            )
        if not (
            0 < self.val_fraction < 1
            and 0 < self.test_fraction < 1
            and self.val_fraction + self.test_fraction < 1
        ):
            raise ValueError(
                "data.val_fraction and data.test_fraction must be in (0, 1) with a sum below 1"
            )
        if self.backbone not in BACKBONES:
            raise ValueError(
                f"data.backbone must be one of {list(BACKBONES)}, got {self.backbone!r}"
            )
        if len(self.cnn_channels) != 2 or min(self.cnn_channels) < 1:
            raise ValueError("data.cnn_channels needs two positive ints")
        for name in ("pretrain_epochs", "pretrain_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"data.{name} must be >= 1")
        if self.pretrain_learning_rate <= 0:
            raise ValueError("data.pretrain_learning_rate must be > 0")
        if self.source != "digits" and not str(self.source).endswith(".npz"):
            raise ValueError(
                f"data.source must be 'digits' or a path to an .npz file, got {self.source!r}"
            )


@dataclasses.dataclass
class TransferData:
    """Features of every split (host numpy, float32; labels int32 in ``0..C-1``).

    Attributes:
        train_features: ``[N_train, F]``; ``train_labels``: ``[N_train]``.
        val_features: ``[N_val, F]``; ``val_labels``: ``[N_val]``.
        test_features: ``[N_test, F]``; ``test_labels``: ``[N_test]``.
        ood_val_features: ``[N_ood_val, F]``; ``ood_test_features``: ``[N_ood_test, F]``.
        feature_shape: shape of one feature vector before flattening (e.g. ``(4, 4, 8)`` for the
            CNN's last feature map, ``(8, 8, 1)`` for raw digits), for importance pictures.
        class_names: original labels of the target classes.
        info: provenance (backbone source accuracy, sizes, ...), JSON-serialisable.
    """

    train_features: np.ndarray
    train_labels: np.ndarray
    val_features: np.ndarray
    val_labels: np.ndarray
    test_features: np.ndarray
    test_labels: np.ndarray
    ood_val_features: np.ndarray
    ood_test_features: np.ndarray
    feature_shape: tuple[int, ...]
    class_names: tuple[int, ...]
    info: dict = dataclasses.field(default_factory=dict)

    @property
    def num_features(self) -> int:
        return int(self.train_features.shape[1])

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    ARRAYS = (
        "train_features",
        "train_labels",
        "val_features",
        "val_labels",
        "test_features",
        "test_labels",
        "ood_val_features",
        "ood_test_features",
    )

    def save(self, path: str | os.PathLike) -> None:
        """Writes an ``.npz`` (arrays + JSON metadata) that :meth:`load` reads back."""
        meta = json.dumps(
            {
                "feature_shape": list(self.feature_shape),
                "class_names": list(self.class_names),
                "info": self.info,
            }
        )
        temporary = f"{path}.tmp.npz"
        np.savez(temporary, meta=np.asarray(meta), **{k: getattr(self, k) for k in self.ARRAYS})
        os.replace(temporary, path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> TransferData:
        with np.load(path) as archive:
            meta = json.loads(str(archive["meta"]))
            arrays = {k: np.asarray(archive[k]) for k in cls.ARRAYS}
        return cls(
            **arrays,
            feature_shape=tuple(meta["feature_shape"]),
            class_names=tuple(meta["class_names"]),
            info=meta["info"],
        )


def load_raw(source: str) -> dict:
    """``{"images" or "features": [N, ...], "labels": [N], optional "ood_*"}`` (numpy)."""
    if source == "digits":
        from sklearn.datasets import load_digits

        digits = load_digits()
        images = (digits.images / 16.0).astype(np.float32)[..., None]  # [1797, 8, 8, 1]
        return {"images": images, "labels": digits.target.astype(np.int32)}
    if not os.path.exists(source):
        raise ValueError(f"data.source {source!r} does not exist")
    try:  # never pickles: a file holding Python objects is refused
        with np.load(source, allow_pickle=False) as archive:
            raw = {k: np.asarray(archive[k]) for k in archive.files}
    except (OSError, ValueError, EOFError) as error:
        raise ValueError(
            f"data.source is not a readable .npz of arrays ({source}): {error}; "
            "write it with numpy.savez (arrays 'labels' and 'images' or "
            "'features')"
        ) from error
    if "labels" not in raw or ("images" in raw) == ("features" in raw):
        raise ValueError(
            f"{source}: needs 'labels' and exactly one of 'images' / 'features'; "
            f"found {sorted(raw)}"
        )
    if "images" in raw:
        if raw["images"].ndim == 3:
            raw["images"] = raw["images"][..., None]
        if raw["images"].ndim != 4:
            raise ValueError(f"{source}: images must be [N, H, W] or [N, H, W, C]")
        raw["images"] = raw["images"].astype(np.float32)
        if "ood_images" in raw and raw["ood_images"].ndim == 3:
            raw["ood_images"] = raw["ood_images"][..., None]
    elif raw["features"].ndim != 2:
        raise ValueError(f"{source}: features must be [N, F]")
    for name, array in raw.items():
        if not (np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_):
            raise ValueError(f"{source}: array {name!r} holds {array.dtype}, not numbers")
        if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
            raise ValueError(
                f"{source}: array {name!r} holds "
                f"{int(np.size(array) - np.isfinite(array).sum())} NaN / inf "
                "values; clean or drop them"
            )
    labels = raw["labels"].reshape(-1)
    if labels.size == 0:
        raise ValueError(f"{source}: no examples (empty 'labels')")
    if np.any(labels != np.round(labels)):
        raise ValueError(f"{source}: 'labels' must be integer class indices")
    if np.unique(labels).size < 2:
        raise ValueError(
            f"{source}: 'labels' hold {np.unique(labels).size} class; at least two are needed"
        )
    raw["labels"] = labels.astype(np.int32)
    inputs = raw.get("images", raw.get("features"))
    assert inputs is not None  # exactly one of them, checked above
    if inputs.shape[0] != raw["labels"].shape[0]:
        raise ValueError(f"{source}: {inputs.shape[0]} inputs but {raw['labels'].shape[0]} labels")
    return raw


def _split_indices(labels: np.ndarray, classes, val_fraction, test_fraction, rng):
    """Per-class random split: returns (train, val, test) index arrays."""
    train, val, test = [], [], []
    for cls in classes:
        members = rng.permutation(np.flatnonzero(labels == cls))
        if members.size < 3:
            raise ValueError(f"class {cls} has {members.size} samples; at least 3 are needed")
        num_val = max(1, int(round(val_fraction * members.size)))
        num_test = max(1, int(round(test_fraction * members.size)))
        val.append(members[:num_val])
        test.append(members[num_val : num_val + num_test])
        train.append(members[num_val + num_test :])
    return tuple(np.sort(np.concatenate(part)) for part in (train, val, test))


def cache_key(config: DataConfig) -> str:
    """Hex digest naming the cached features of ``config`` (includes the .npz's size/mtime)."""
    payload = dataclasses.asdict(config)
    if config.source != "digits" and os.path.exists(config.source):
        status = os.stat(config.source)
        payload["source_stat"] = [status.st_size, int(status.st_mtime)]
    text = json.dumps(payload, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def default_cache_dir() -> str:
    """``$SYNPRUNE_CACHE_DIR/transfer`` or ``~/.cache/synprune_jax/transfer``."""
    root = os.environ.get(
        "SYNPRUNE_CACHE_DIR", os.path.join(os.path.expanduser("~"), ".cache", "synprune_jax")
    )
    return os.path.join(root, "transfer")


def prepare_data(
    config: DataConfig,
    *,
    cache_dir: str | None = None,
    feature_fn: Callable[[np.ndarray], np.ndarray] | None = None,
) -> TransferData:
    """Loads, splits and featurises the data; pretrains the backbone when needed.

    Features are standardised with the mean / standard deviation of the target *train* split.
    With ``cache_dir`` (and no custom ``feature_fn``), the result is stored as
    ``<cache_dir>/features-<cache_key>.npz`` and later calls load it instead of pretraining.

    Args:
        config: :class:`DataConfig`.
        cache_dir: folder of the feature cache, or None for no cache.
        feature_fn: a frozen backbone of your own, ``images [n, H, W, C] -> features [n, ...]``
            (numpy in, array-like out); replaces ``config.backbone``.

    Returns:
        :class:`TransferData`.
    """
    path = None
    if cache_dir is not None and feature_fn is None:
        path = os.path.join(cache_dir, f"features-{cache_key(config)}.npz")
        if os.path.exists(path):
            return TransferData.load(path)
    raw = load_raw(config.source)
    labels = raw["labels"]
    rng = np.random.default_rng(config.seed)
    present = set(np.unique(labels).tolist())
    missing = [c for c in (*config.target_classes, *config.ood_classes) if c not in present]
    if missing:
        raise ValueError(f"classes {missing} do not occur in {config.source}")
    train, val, test = _split_indices(
        labels, config.target_classes, config.val_fraction, config.test_fraction, rng
    )
    info: dict = {"source": config.source}
    if "images" in raw:
        images = raw["images"]
        ood_inputs = (
            raw["ood_images"]
            if "ood_images" in raw
            else images[np.isin(labels, config.ood_classes)]
        )
        if feature_fn is not None:
            extract = lambda x: np.asarray(feature_fn(x), np.float32)  # noqa: E731
            info["backbone"] = "custom"
        elif config.backbone == "cnn":
            from synprune_jax.transfer.backbone import pretrain_cnn

            source_mask = np.isin(labels, config.source_classes)
            if not source_mask.any():
                raise ValueError(f"no sample of source_classes {list(config.source_classes)}")
            extract, backbone_info = pretrain_cnn(images[source_mask], labels[source_mask], config)
            info.update(backbone_info)
        else:
            extract = lambda x: x.astype(np.float32)  # noqa: E731
            info["backbone"] = "pixels"
        features = extract(images)
        ood_features = extract(ood_inputs)
    else:
        features = raw["features"].astype(np.float32)
        ood_features = (
            raw["ood_features"].astype(np.float32)
            if "ood_features" in raw
            else features[np.isin(labels, config.ood_classes)]
        )
        info["backbone"] = "given features"
    feature_shape = tuple(int(s) for s in features.shape[1:])
    features = features.reshape(features.shape[0], -1)
    ood_features = ood_features.reshape(ood_features.shape[0], -1)
    if ood_features.shape[0] < 2:
        raise ValueError(
            "at least two out-of-distribution samples are needed (ood_classes or "
            "ood_images / ood_features)"
        )
    mean = features[train].mean(axis=0)
    scale = features[train].std(axis=0) + 1e-6
    standardise = lambda x: ((x - mean) / scale).astype(np.float32)  # noqa: E731
    remap = np.full(int(labels.max()) + 1, -1, np.int32)
    remap[list(config.target_classes)] = np.arange(len(config.target_classes), dtype=np.int32)
    ood_order = rng.permutation(ood_features.shape[0])
    half = ood_features.shape[0] // 2
    data = TransferData(
        train_features=standardise(features[train]),
        train_labels=remap[labels[train]],
        val_features=standardise(features[val]),
        val_labels=remap[labels[val]],
        test_features=standardise(features[test]),
        test_labels=remap[labels[test]],
        ood_val_features=standardise(ood_features[np.sort(ood_order[:half])]),
        ood_test_features=standardise(ood_features[np.sort(ood_order[half:])]),
        feature_shape=feature_shape,
        class_names=tuple(int(c) for c in config.target_classes),
        info=info,
    )
    data.info.update(
        {
            f"num_{k.replace('_features', '')}": int(getattr(data, k).shape[0])
            for k in TransferData.ARRAYS
            if k.endswith("features")
        }
    )
    if path is not None and cache_dir is not None:  # a path comes with a cache directory
        os.makedirs(cache_dir, exist_ok=True)
        data.save(path)
    return data
