"""CHECKPOINT as a user names it → one published, verified checkpoint and its run folder.

Accepted, local or any pyarrow.fs URI the checkpoint store supports (s3://…, file://…):

- a step directory `…/<lineage>/step-000000100`: exactly that checkpoint;
- a lineage directory (holds lineage.json): its newest checkpoint that verifies;
- a checkpoint location (the job's checkpoint.uri): its newest lineage's newest one;
- a run folder OUTPUT_DIR/NAME/RUN_ID (holds spec.yaml): the newest checkpoint of the
  lineage that run wrote to;
- a job folder OUTPUT_DIR/NAME (holds checkpoints/): its newest checkpoint.

A checkpoint without its manifest (the save never finished) or whose files do not match
the manifest is refused, never evaluated.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import yaml

from deepyard.checkpoint import catalog
from deepyard.checkpoint.manifest import LINEAGE, Checkpoint, parse_step, problems, read_manifest
from deepyard.checkpoint.store import _URI_SCHEME, Store
from deepyard.errors import CheckpointError

Warn = Callable[[str], None]
ACCEPTED = (
    "pass a checkpoint directory (…/<lineage>/step-000000100), a job's checkpoint.uri, or "
    "a run folder (OUTPUT_DIR/NAME/RUN_ID)"
)


@dataclass(frozen=True)
class Located:
    store: Store
    checkpoint: Checkpoint
    run_dir: Path | None  # the run that wrote it, where one is found (its record gets evals)

    @property
    def uri(self) -> str:
        return f"{self.store.shown_uri}/{self.checkpoint.prefix}"

    @property
    def manifest(self) -> dict[str, Any]:
        assert self.checkpoint.manifest is not None
        return self.checkpoint.manifest


def resolve(arg: str, warn: Warn, run_dir: Path | None = None) -> Located:
    """The checkpoint `arg` names (see the module docstring); `run_dir` overrides the run
    whose record an evaluation is added to."""
    remote = bool(_URI_SCHEME.match(arg)) and not arg.startswith("file://")
    if remote:
        store, checkpoint = _resolve_uri(arg, warn)
        return Located(store, checkpoint, run_dir)
    path = Path(arg.removeprefix("file://")).expanduser().absolute()
    if not path.exists():
        raise CheckpointError(f"CHECKPOINT {arg} does not exist; {ACCEPTED}")
    if (path / "spec.yaml").is_file():
        found = _from_run(path, warn)
        return found if run_dir is None else Located(found.store, found.checkpoint, run_dir)
    if (path / "checkpoints").is_dir() and not _is_store(path):
        path = path / "checkpoints"
    store, checkpoint = _resolve_uri(str(path), warn)
    return Located(store, checkpoint, run_dir or find_run(store, checkpoint))


def _resolve_uri(uri: str, warn: Warn) -> tuple[Store, Checkpoint]:
    parent, name = split_last(uri)
    step = parse_step(name)
    if step is not None:
        root, lineage = split_last(parent)
        store = _open_existing(root)
        return store, exactly(store, lineage, step)
    store = _open_existing(uri)
    if store.exists(LINEAGE):  # a lineage directory
        root, lineage = split_last(uri)
        store = _open_existing(root)
        return store, newest(store, lineage, warn)
    names = catalog.lineages(store)
    if not names:
        raise CheckpointError(f"CHECKPOINT {store.shown_uri} holds no checkpoints; {ACCEPTED}")
    return store, newest(store, names[-1], warn)


def exactly(store: Store, lineage: str, step: int) -> Checkpoint:
    """The checkpoint at `step`, refused unless it is published and verifies."""
    checkpoint = Checkpoint(lineage, step, None)
    manifest = read_manifest(store, checkpoint.prefix)
    where = f"{store.shown_uri}/{checkpoint.prefix}"
    listing = f"`deepyard checkpoint list {store.shown_uri}` shows the published ones"
    if not store.exists(checkpoint.prefix):
        raise CheckpointError(f"CHECKPOINT {where} does not exist; {listing}")
    if manifest is None:
        raise CheckpointError(
            f"CHECKPOINT {where} has no manifest.json: its save never finished, so it is "
            f"not evaluated; pass a published checkpoint ({listing})"
        )
    bad = problems(store, checkpoint.prefix, manifest)
    if bad:
        raise CheckpointError(
            f"CHECKPOINT {where} fails verification: {bad[0]}; pass another checkpoint ({listing})"
        )
    return Checkpoint(lineage, step, manifest)


def newest(store: Store, lineage: str, warn: Warn) -> Checkpoint:
    found = catalog.newest_valid(store, lineage, warn)
    if found is None:
        raise CheckpointError(
            f"CHECKPOINT {store.shown_uri}/{lineage} has no published checkpoint that "
            f"verifies; `deepyard checkpoint list {store.shown_uri}` shows what there is"
        )
    return found


def _from_run(run_dir: Path, warn: Warn) -> Located:
    spec = read_run_spec(run_dir)
    checkpoint = spec.get("checkpoint") or {}
    if not (checkpoint.get("every_steps") or checkpoint.get("every_minutes")):
        raise CheckpointError(
            f"CHECKPOINT {run_dir} is a run trained without checkpoints "
            "(checkpoint.every_steps was not set), so there is nothing to evaluate"
        )
    # The default location is OUTPUT_DIR/NAME/checkpoints, and a run is OUTPUT_DIR/NAME/ID.
    uri = checkpoint.get("uri") or str(run_dir.parent / "checkpoints")
    store = _open_existing(uri)
    lineage = _run_lineage(run_dir)
    if lineage is None:  # a run recorded before checkpoint events named their lineage
        names = catalog.lineages(store)
        lineage = names[-1] if names else None
    if lineage is None:
        raise CheckpointError(f"CHECKPOINT {run_dir}: {store.shown_uri} holds no checkpoints")
    return Located(store, newest(store, lineage, warn), run_dir)


def read_run_spec(run_dir: Path) -> dict[str, Any]:
    try:
        spec = yaml.safe_load((run_dir / "spec.yaml").read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise CheckpointError(
            f"{run_dir / 'spec.yaml'}: cannot read the run's spec ({exc})"
        ) from None
    if not isinstance(spec, dict):
        raise CheckpointError(f"{run_dir / 'spec.yaml'}: not a job spec")
    return spec


def _checkpoint_events(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / "events.jsonl"
    if not path.is_file():
        return []
    events = []
    for line in path.read_text().splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if event.get("type") == "checkpoint" and event.get("lineage"):
            events.append(event)
    return events


def _run_lineage(run_dir: Path) -> str | None:
    """The lineage a run saved into (recorded with each checkpoint event)."""
    events = _checkpoint_events(run_dir)
    return str(events[-1]["lineage"]) if events else None


def find_run(store: Store, checkpoint: Checkpoint) -> Path | None:
    """The newest run folder that saved `checkpoint`, for checkpoints in the default
    location OUTPUT_DIR/NAME/checkpoints (the runs sit beside it)."""
    if not store.is_local or store.local_path().name != "checkpoints":
        return None
    job_dir = store.local_path().parent
    for run_dir in sorted((p for p in job_dir.iterdir() if p.is_dir()), reverse=True):
        saved = {(e["lineage"], e.get("step")) for e in _checkpoint_events(run_dir)}
        if (checkpoint.lineage, checkpoint.step) in saved:
            return run_dir
    return None


def _is_store(path: Path) -> bool:
    return any((child / LINEAGE).is_file() for child in path.iterdir() if child.is_dir())


def _open_existing(uri: str) -> Store:
    """Open a store without creating a local directory that is not there."""
    if not _URI_SCHEME.match(uri) and not Path(uri).expanduser().is_dir():
        raise CheckpointError(f"CHECKPOINT {uri} does not exist; {ACCEPTED}")
    return Store.open(uri)


def split_last(uri: str) -> tuple[str, str]:
    """(parent, last name) of a path or URI; a URI keeps its scheme and query."""
    if not _URI_SCHEME.match(uri):
        path = Path(uri)
        return str(path.parent), path.name
    parts = urlsplit(uri)
    trimmed = parts.path.rstrip("/")
    parent, _, name = trimmed.rpartition("/")
    if not name or (not parent and not parts.netloc):
        raise CheckpointError(f"CHECKPOINT {uri} names no checkpoint; {ACCEPTED}")
    return urlunsplit(parts._replace(path=parent)), name
