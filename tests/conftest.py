"""Shared test set-up: packaged datasets prepare into one cache per session (or CI's)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "jobs" / "examples"


@pytest.fixture(scope="session", autouse=True)
def dataset_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Set DEEPYARD_CACHE before anything (Ray workers included) reads it."""
    if "DEEPYARD_CACHE" not in os.environ:
        os.environ["DEEPYARD_CACHE"] = str(tmp_path_factory.mktemp("deepyard-cache"))
    return Path(os.environ["DEEPYARD_CACHE"])
