"""What a published checkpoint is: its layout in the store and its manifest.

    <root>/<lineage>/lineage.json              one per fresh start (`--restart` opens a new one)
    <root>/<lineage>/step-000000100/*.pt       DeepSpeed's files (tag = the directory name)
    <root>/<lineage>/step-000000100/rank-0.json  one record per rank: its files' hashes,
                                               data cursor and RNG states
    <root>/<lineage>/step-000000100/manifest.json  written last, by rank 0, once every rank's
                                               record is in: the checkpoint exists only then

A checkpoint is trusted only when its manifest parses and every file it names has the
recorded size and sha256.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from deepyard.checkpoint.store import Store

FORMAT = 1
MANIFEST = "manifest.json"
LINEAGE = "lineage.json"
_STEP_DIR = re.compile(r"^step-(\d{9})$")


def step_dir(step: int) -> str:
    return f"step-{step:09d}"


def parse_step(name: str) -> int | None:
    match = _STEP_DIR.match(name)
    return int(match.group(1)) if match else None


def rank_record_name(rank: int) -> str:
    return f"rank-{rank}.json"


@dataclass(frozen=True)
class Checkpoint:
    """One step directory of a lineage; `manifest` is None while (or if) unpublished."""

    lineage: str
    step: int
    manifest: dict[str, Any] | None

    @property
    def prefix(self) -> str:
        return f"{self.lineage}/{step_dir(self.step)}"

    @property
    def published(self) -> bool:
        return self.manifest is not None

    def metric(self, name: str) -> float | None:
        value = (self.manifest or {}).get("metrics", {}).get(name)
        return None if value is None else float(value)


def build_manifest(
    meta: dict[str, Any], records: list[dict[str, Any]], prefix: str
) -> dict[str, Any]:
    """The manifest of one checkpoint from its metadata and every rank's record."""
    files: dict[str, dict[str, Any]] = {}
    for record in sorted(records, key=lambda r: r["rank"]):
        files.update(record["files"])
    ranks = [
        {"rank": r["rank"], "cursor": r["cursor"], "rng": r["rng"]}
        for r in sorted(records, key=lambda r: r["rank"])
    ]
    return {
        "format": FORMAT,
        **meta,
        "prefix": prefix,
        "ranks": ranks,
        "files": dict(sorted(files.items())),
        "size_bytes": sum(f["size_bytes"] for f in files.values()),
    }


def read_manifest(store: Store, prefix: str) -> dict[str, Any] | None:
    """The parsed manifest under `prefix`, or None when there is none (unpublished)."""
    key = f"{prefix}/{MANIFEST}"
    if not store.exists(key):
        return None
    try:
        manifest: dict[str, Any] = json.loads(store.get_bytes(key))
    except (ValueError, UnicodeDecodeError):
        return {"format": None, "unreadable": True}
    return manifest


def problems(store: Store, prefix: str, manifest: dict[str, Any] | None) -> list[str]:
    """Why the checkpoint under `prefix` cannot be trusted; [] when it verifies."""
    where = f"{store.shown_uri}/{prefix}"
    if manifest is None:
        return [f"{where}: no {MANIFEST} (the save never finished)"]
    if manifest.get("format") != FORMAT:
        return [f"{where}/{MANIFEST}: unreadable or of an unknown format"]
    found = {f.key: f.size_bytes for f in store.list_files(prefix)}
    out = []
    for name, want in manifest["files"].items():
        key = f"{prefix}/{name}"
        if key not in found:
            out.append(f"{where}/{name}: missing")
        elif found[key] != want["size_bytes"]:
            out.append(f"{where}/{name}: {found[key]} bytes, manifest says {want['size_bytes']}")
        elif store.sha256(key) != want["sha256"]:
            out.append(f"{where}/{name}: sha256 differs from the manifest (corrupt)")
    return out
