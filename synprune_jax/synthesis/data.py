"""Image classification data for the synthesis experiments (host side, numpy): a
:class:`Dataset` of float32 images ``[N, H, W, 1]`` in ``[0, 1]`` and int32 labels ``[N]`` from
scikit-learn's bundled 8x8 digits resized to 32x32 (:func:`load_digits_32`, the offline default)
or from MNIST's IDX files in a folder the user provides (:func:`load_mnist`; :func:`read_idx` /
:func:`write_idx` handle the format: big-endian header of two zero bytes, a type code, the number
of dimensions and one int32 per dimension, then the data).
"""

from __future__ import annotations

import gzip
import os
import struct as struct_lib
from typing import NamedTuple

import numpy as np

_IDX_TYPES: dict[int, type | np.dtype] = {
    0x08: np.uint8,
    0x09: np.int8,
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_IDX_CODES = {np.dtype(np.uint8): 0x08, np.dtype(np.int8): 0x09}

MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


class Dataset(NamedTuple):
    """Train / validation / test splits.

    Attributes:
        train_images: ``[N_train, H, W, 1]`` float32 in ``[0, 1]``; likewise ``validation_images``
            ``[N_val, H, W, 1]`` and ``test_images`` ``[N_test, H, W, 1]``.
        train_labels: ``[N_train]`` int32 class indices; ``validation_labels`` ``[N_val]``,
            ``test_labels`` ``[N_test]``.
        num_classes: number of classes (static).
        name: ``"digits"`` or ``"mnist"``.
    """

    train_images: np.ndarray
    train_labels: np.ndarray
    validation_images: np.ndarray
    validation_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    num_classes: int
    name: str

    @property
    def image_size(self) -> int:
        return int(self.train_images.shape[1])


# ----- IDX ----------------------------------------------------------------------------------------


def _open(path: str | os.PathLike, mode: str = "rb"):
    path = os.fspath(path)
    return gzip.open(path, mode) if path.endswith(".gz") else open(path, mode)


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Reads an IDX file (optionally gzip-compressed) into a numpy array of its stated shape.

    Raises:
        ValueError: a malformed header, an unknown type code or a size that does not match the
            header.
    """
    with _open(path) as handle:
        data = handle.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise ValueError(f"{path}: not an IDX file (bad magic number)")
    code, num_dims = data[2], data[3]
    if code not in _IDX_TYPES:
        raise ValueError(f"{path}: unknown IDX type code 0x{code:02x}")
    header = 4 + 4 * num_dims
    if len(data) < header:
        raise ValueError(f"{path}: truncated IDX header")
    shape = struct_lib.unpack(f">{num_dims}i", data[4:header])
    dtype = np.dtype(_IDX_TYPES[code])
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) - header != expected:
        raise ValueError(
            f"{path}: header says shape {shape} ({expected} bytes of data) but the "
            f"file holds {len(data) - header}"
        )
    return (
        np.frombuffer(data, dtype=dtype, offset=header)
        .reshape(shape)
        .astype(dtype.newbyteorder("="))
    )


def write_idx(path: str | os.PathLike, array: np.ndarray) -> None:
    """Writes a uint8 or int8 array as an IDX file (gzip-compressed when ``path`` ends in .gz)."""
    array = np.asarray(array)
    if array.dtype not in _IDX_CODES:
        raise ValueError(f"write_idx supports uint8 and int8 arrays, got {array.dtype}")
    header = bytes([0, 0, _IDX_CODES[array.dtype], array.ndim])
    header += struct_lib.pack(f">{array.ndim}i", *array.shape)
    with _open(path, "wb") as handle:
        handle.write(header + np.ascontiguousarray(array).tobytes())


def _find(directory: str, stem: str) -> str:
    candidates = [
        stem,
        stem + ".gz",
        stem.replace("-idx", ".idx"),
        stem.replace("-idx", ".idx") + ".gz",
    ]
    for name in candidates:
        path = os.path.join(directory, name)
        if os.path.exists(path):
            return path
    raise FileNotFoundError(f"no {stem}[.gz] in {directory} (tried {candidates})")


# ----- splits -------------------------------------------------------------------------------------


def _check_fraction(name: str, value: float) -> None:
    if not 0.0 < value < 1.0:
        raise ValueError(f"{name} must be in (0, 1), got {value}")


def _split(images: np.ndarray, labels: np.ndarray, fraction: float, seed: int):
    """Shuffles with ``seed`` and cuts off the last ``round(fraction * N)`` examples."""
    order = np.random.default_rng(seed).permutation(len(labels))
    cut = len(labels) - int(round(fraction * len(labels)))
    if cut < 1 or cut >= len(labels):
        raise ValueError(
            f"a fraction of {fraction} of {len(labels)} examples leaves an empty split"
        )
    first, second = order[:cut], order[cut:]
    return images[first], labels[first], images[second], labels[second]


def _subset(images: np.ndarray, labels: np.ndarray, limit: int):
    """The first ``limit`` examples (all when ``limit`` is 0)."""
    return (images[:limit], labels[:limit]) if limit else (images, labels)


def resize_images(images: np.ndarray, size: int) -> np.ndarray:
    """Bilinear resize ``[N, h, w]`` -> ``[N, size, size]`` (float32, half-pixel centres)."""
    import jax

    images = np.asarray(images, np.float32)
    resized = jax.image.resize(images, (images.shape[0], size, size), method="linear")
    return np.asarray(resized, np.float32)


def load_digits_32(
    *,
    validation_fraction: float = 0.2,
    test_fraction: float = 0.2,
    split_seed: int = 0,
    image_size: int = 32,
) -> Dataset:
    """scikit-learn's digits (8x8, values 0..16) resized to ``image_size`` and scaled to [0, 1].

    The 1,797 images are shuffled with ``split_seed``; ``test_fraction`` of them form the test
    split and ``validation_fraction`` of the rest the validation split.
    """
    from sklearn.datasets import load_digits

    _check_fraction("test_fraction", test_fraction)
    _check_fraction("validation_fraction", validation_fraction)
    digits = load_digits()
    images = resize_images(digits.images / 16.0, image_size)[..., None]
    labels = digits.target.astype(np.int32)
    rest_x, rest_y, test_x, test_y = _split(images, labels, test_fraction, split_seed)
    train_x, train_y, val_x, val_y = _split(rest_x, rest_y, validation_fraction, split_seed + 1)
    return Dataset(train_x, train_y, val_x, val_y, test_x, test_y, 10, "digits")


def load_mnist(
    directory: str | os.PathLike,
    *,
    validation_fraction: float = 1 / 12,
    split_seed: int = 0,
    pad_to_32: bool = True,
    max_train: int = 0,
    max_test: int = 0,
) -> Dataset:
    """MNIST from the four standard IDX files in ``directory`` (plain or ``.gz``).

    Args:
        directory: folder holding ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
            ``t10k-images-idx3-ubyte`` and ``t10k-labels-idx1-ubyte`` (``.gz`` accepted).
        validation_fraction: share of the training file held out for validation (default 5,000
            of 60,000).
        split_seed: seed of the train / validation shuffle.
        pad_to_32: zero-pad 28x28 images to 32x32 (classic LeNet-5 input).
        max_train: if > 0, keep only this many training examples (after the split).
        max_test: if > 0, keep only this many test examples.
    """
    directory = os.fspath(directory)
    _check_fraction("validation_fraction", validation_fraction)
    arrays = {key: read_idx(_find(directory, stem)) for key, stem in MNIST_FILES.items()}
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise ValueError(
                f"MNIST {split}: images {images.shape} and labels {labels.shape} "
                "do not form [N, H, W] / [N]"
            )

    def prepare(images):
        images = images.astype(np.float32) / 255.0
        if pad_to_32:
            pad = max(0, (32 - images.shape[1]) // 2)
            images = np.pad(images, ((0, 0), (pad, pad), (pad, pad)))
        return images[..., None]

    train_x, train_y, val_x, val_y = _split(
        prepare(arrays["train_images"]),
        arrays["train_labels"].astype(np.int32),
        validation_fraction,
        split_seed,
    )
    train_x, train_y = _subset(train_x, train_y, max_train)
    test_x, test_y = _subset(
        prepare(arrays["test_images"]), arrays["test_labels"].astype(np.int32), max_test
    )
    num_classes = int(max(train_y.max(), test_y.max())) + 1
    return Dataset(train_x, train_y, val_x, val_y, test_x, test_y, max(num_classes, 10), "mnist")


def load_dataset(
    name: str,
    *,
    mnist_dir: str | None = None,
    validation_fraction: float = 0.2,
    test_fraction: float = 0.2,
    split_seed: int = 0,
    max_train: int = 0,
) -> Dataset:
    """``"digits"`` (offline default) or ``"mnist"`` (needs ``mnist_dir``)."""
    if name == "digits":
        dataset = load_digits_32(
            validation_fraction=validation_fraction,
            test_fraction=test_fraction,
            split_seed=split_seed,
        )
        train_x, train_y = _subset(dataset.train_images, dataset.train_labels, max_train)
        return dataset._replace(train_images=train_x, train_labels=train_y)
    if name == "mnist":
        if not mnist_dir:
            raise ValueError("data.name='mnist' needs data.mnist_dir (a folder with the IDX files)")
        return load_mnist(
            mnist_dir,
            validation_fraction=validation_fraction,
            split_seed=split_seed,
            max_train=max_train,
        )
    raise ValueError(f"unknown dataset {name!r}; valid: ['digits', 'mnist']")
