"""Real datasets that ship in packages, converted to Parquet (train/test splits).

- fashion-mnist: Debian package `dataset-fashion-mnist` (IDX files, 60k/10k, 28x28)
- digits: scikit-learn's `load_digits()` (1,797 8x8 digits; a seeded 80/20 split)
"""

from __future__ import annotations

import gzip
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from deepyard.data.parquet import write_split
from deepyard.errors import DataError

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
Split = tuple[np.ndarray, np.ndarray]


def _read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as fh:
        data = fh.read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def _fashion_mnist() -> tuple[Split, Split, int]:
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
    return splits[0], splits[1], 10


def _digits() -> tuple[Split, Split, int]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = (bunch.images[:, None] / 16.0).astype(np.float32)
    labels = bunch.target.astype(np.int64)
    order = np.random.default_rng(0).permutation(len(labels))
    cut = int(len(order) * 0.8)
    train, test = order[:cut], order[cut:]
    return (images[train], labels[train]), (images[test], labels[test]), 10


PACKAGED: dict[str, Callable[[], tuple[Split, Split, int]]] = {
    "fashion-mnist": _fashion_mnist,
    "digits": _digits,
}


def check_name(name: str) -> None:
    if name not in PACKAGED:
        raise ValueError(
            f"data.dataset={name!r} is not a packaged dataset; use one of: "
            f"{', '.join(sorted(PACKAGED))}, or set data.train to a Parquet path"
        )


def cache_dir() -> Path:
    root = os.environ.get("DEEPYARD_CACHE") or Path.home() / ".cache" / "deepyard"
    return Path(root) / "datasets"


def prepare(name: str, out_dir: Path) -> tuple[Path, Path]:
    """Convert a packaged dataset into OUT/train.parquet and OUT/test.parquet."""
    check_name(name)
    (train_x, train_y), (test_x, test_y), num_classes = PACKAGED[name]()
    out_dir.mkdir(parents=True, exist_ok=True)
    train_path, test_path = out_dir / "train.parquet", out_dir / "test.parquet"
    write_split(train_path, train_x, train_y, num_classes)
    write_split(test_path, test_x, test_y, num_classes)
    return train_path, test_path


def ensure_prepared(name: str) -> tuple[Path, Path]:
    """The cached Parquet splits of a packaged dataset, prepared on first use."""
    out = cache_dir() / name
    train_path, test_path = out / "train.parquet", out / "test.parquet"
    if train_path.is_file() and test_path.is_file():
        return train_path, test_path
    return prepare(name, out)
