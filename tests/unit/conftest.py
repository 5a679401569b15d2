"""Shared fixtures of the unit suite: small job specs, written where a test can find them.

Unit tests never start Ray; anything that would is an integration test.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from textwrap import dedent
from typing import Any

import pytest

from deepyard.checkpoint.manifest import build_manifest, step_dir
from deepyard.checkpoint.store import Store

Publish = Callable[..., Path]

# Line numbers matter: spec tests assert `job.yaml:LINE:` locations against this text.
BASE_SPEC = dedent(
    """\
    name: tiny
    model:
      name: mlp
      args: {hidden: 16}
    data:
      dataset: digits
      batch_size: 8
    training:
      max_steps: 5
    """
)


@pytest.fixture
def base_spec_text() -> str:
    """A minimal valid job spec (9 lines: model on line 2, data 5, training 8)."""
    return BASE_SPEC


@pytest.fixture
def base_spec_dict() -> Callable[..., dict[str, Any]]:
    """A fresh raw spec mapping; keyword sections are merged over the base ones."""

    def make(**sections: dict[str, Any]) -> dict[str, Any]:
        raw: dict[str, Any] = {
            "name": "tiny",
            "model": {"name": "mlp", "args": {"hidden": 16}},
            "data": {"dataset": "digits", "batch_size": 8},
            "training": {"max_steps": 5},
        }
        for key, value in sections.items():
            if isinstance(value, dict) and isinstance(raw.get(key), dict):
                raw[key] = {**raw[key], **value}
            else:
                raw[key] = value
        return raw

    return make


@pytest.fixture
def write_spec(tmp_path: Path) -> Callable[[str, str], Path]:
    """Write spec text to tmp_path/NAME and return the path."""

    def write(text: str, name: str = "job.yaml") -> Path:
        path = tmp_path / name
        path.write_text(text)
        return path

    return write


@pytest.fixture
def deepyard_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Packaged datasets are prepared under tmp_path, never in the user's ~/.cache."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("DEEPYARD_CACHE", str(cache))
    return cache


def publish(store: Store, lineage: str, step: int, payload: bytes = b"weights") -> Path:
    prefix = f"{lineage}/{step_dir(step)}"
    store.put_bytes(f"{prefix}/model.pt", payload)
    record = {
        "rank": 0,
        "cursor": {"consumed": step},
        "rng": {},
        "files": {
            "model.pt": {"sha256": hashlib.sha256(payload).hexdigest(), "size_bytes": len(payload)}
        },
    }
    manifest = build_manifest({"step": step, "world_size": 1}, [record], prefix)
    store.put_bytes(f"{prefix}/manifest.json", json.dumps(manifest).encode())
    return store.local_path(f"{prefix}/model.pt")


@pytest.fixture(name="publish")
def publish_fixture() -> Publish:
    """publish(store, lineage, step, payload): a valid one-file checkpoint, manifest last;
    returns the local path of its file (to corrupt it)."""
    return publish
