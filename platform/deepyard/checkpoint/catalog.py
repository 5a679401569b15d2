"""The driver's view of a checkpoint location: lineages, checkpoints, the one to resume.

A lineage is one chain of checkpoints from a fresh start. Rerunning a job continues
its newest lineage from the newest checkpoint that verifies; `--restart` opens a new
lineage and leaves the old one untouched (nothing is deleted behind a user's back).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable

from deepyard.checkpoint.manifest import (
    LINEAGE,
    Checkpoint,
    parse_step,
    problems,
    read_manifest,
)
from deepyard.checkpoint.store import Store
from deepyard.telemetry.record import new_run_id

Warn = Callable[[str], None]


def lineages(store: Store) -> list[str]:
    """Lineage names, oldest first (names start with their creation time)."""
    return [name for name in store.list_dirs() if store.exists(f"{name}/{LINEAGE}")]


def checkpoints(store: Store, lineage: str) -> list[Checkpoint]:
    """Every step directory of `lineage`, oldest first, with its manifest where published."""
    out = []
    for name in store.list_dirs(lineage):
        step = parse_step(name)
        if step is not None:
            out.append(Checkpoint(lineage, step, read_manifest(store, f"{lineage}/{name}")))
    return sorted(out, key=lambda c: c.step)


def open_lineage(store: Store, job: str, spec_hash: str, restart: bool) -> tuple[str, bool]:
    """The lineage this run writes to, and whether it is new."""
    existing = lineages(store)
    if existing and not restart:
        return existing[-1], False
    name = new_run_id()
    record = {"job": job, "spec_hash": spec_hash, "created": time.time()}
    store.put_bytes(f"{name}/{LINEAGE}", json.dumps(record, indent=2).encode())
    return name, True


def newest_valid(store: Store, lineage: str, warn: Warn) -> Checkpoint | None:
    """The newest published checkpoint whose files all verify; warns about each one skipped."""
    return _first_valid(store, reversed(checkpoints(store, lineage)), warn)


def nearest_valid(store: Store, lineage: str, step: int, warn: Warn) -> Checkpoint | None:
    """The published checkpoint at `step` if it verifies, else the verified one nearest to
    it (the earlier of two as near); warns about each one skipped."""
    by_distance = sorted(checkpoints(store, lineage), key=lambda c: (abs(c.step - step), c.step))
    return _first_valid(store, by_distance, warn)


def _first_valid(store: Store, candidates: Iterable[Checkpoint], warn: Warn) -> Checkpoint | None:
    for checkpoint in candidates:
        if not checkpoint.published:
            continue
        bad = problems(store, checkpoint.prefix, checkpoint.manifest)
        if not bad:
            return checkpoint
        warn(
            f"checkpoint step {checkpoint.step} cannot be trusted and is skipped: {bad[0]}"
            + (f" (and {len(bad) - 1} more)" if len(bad) > 1 else "")
        )
    return None
