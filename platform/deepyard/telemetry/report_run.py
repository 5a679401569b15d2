"""A run directory read back for reports: summary, history, evaluations and events, plus
where attempts failed and resumed. Only summary.json is required (older runs have no
events.jsonl)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from deepyard.errors import DataError


@dataclass(frozen=True)
class RunFiles:
    """What one run directory holds; optional files are empty when absent."""

    run_dir: Path
    summary: dict[str, Any]
    history: dict[str, list[Any]]  # column → one value per optimizer step, in arrival order
    evals: list[dict[str, Any]]
    events: list[dict[str, Any]]
    spec_text: str

    def column(self, name: str) -> list[Any]:
        steps = len(self.history.get("step", []))
        return self.history.get(name) or ([1] * steps if name == "attempt" else [])

    def attempts(self) -> list[int]:
        return sorted(set(self.column("attempt")))

    def rows_of(self, attempt: int) -> list[int]:
        return [i for i, a in enumerate(self.column("attempt")) if a == attempt]

    def spec_hash(self) -> str | None:
        found = re.search(r"hash (\w+)", self.spec_text.partition("\n")[0])
        return self.summary.get("spec_hash") or (found.group(1) if found else None)


@dataclass(frozen=True)
class Marker:
    """A vertical line: where an attempt failed or where the next one resumed."""

    kind: str  # "failed" | "resumed"
    step: int
    t: float | None
    label: str


# ---------------------------------------------------------------- reading the run


def load_run(run_dir: Path) -> RunFiles:
    """Read a run directory; only summary.json is required (older runs lack events)."""
    if not run_dir.is_dir():
        raise DataError(
            f"{run_dir}: no such run directory; pass OUTPUT_DIR/NAME/RUN_ID, "
            "the folder that holds the run's summary.json"
        )
    summary_path = run_dir / "summary.json"
    if not summary_path.is_file():
        raise DataError(_missing_summary(run_dir))
    summary = _read_json(summary_path)
    if not isinstance(summary, dict):
        raise DataError(f"{summary_path}: expected a JSON object, found {type(summary).__name__}")
    spec_path = run_dir / "spec.yaml"
    return RunFiles(
        run_dir=run_dir,
        summary=summary,
        history=_read_history(run_dir / "history.parquet"),
        evals=_read_json(run_dir / "evals.json") if (run_dir / "evals.json").is_file() else [],
        events=_read_events(run_dir / "events.jsonl"),
        spec_text=spec_path.read_text() if spec_path.is_file() else "",
    )


def _missing_summary(run_dir: Path) -> str:
    runs = sorted(p.name for p in run_dir.iterdir() if (p / "summary.json").is_file())
    if runs:
        return f"{run_dir} is a job's folder, not a run: pick one of its runs, e.g. " + ", ".join(
            str(run_dir / r) for r in runs[-3:]
        )
    return (
        f"{run_dir}: summary.json is missing, so this is not a finished run directory "
        "(the run is still going, or was killed before it wrote its records)"
    )


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: cannot read it as JSON ({exc})") from None


def _read_history(path: Path) -> dict[str, list[Any]]:
    if not path.is_file():
        return {}
    try:
        return pq.read_table(path).to_pydict()
    except (OSError, pa.ArrowException) as exc:
        raise DataError(f"{path}: cannot read it as Parquet ({exc})") from None


def _read_events(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    events = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            events.append(json.loads(line))
        except ValueError:
            raise DataError(f"{path}:{number}: not a JSON line: {line[:80]!r}") from None
    return events


# ---------------------------------------------------------------- attempts and restarts


def redone_rows(run: RunFiles) -> list[int]:
    """Rows whose step an earlier attempt had already done (work lost to a restart)."""
    first_attempt: dict[int, int] = {}
    redone = []
    for i, (step, attempt) in enumerate(
        zip(run.column("step"), run.column("attempt"), strict=True)
    ):
        if first_attempt.setdefault(step, attempt) < attempt:
            redone.append(i)
    return redone


def restart_markers(run: RunFiles) -> list[Marker]:
    steps, times, attempts = run.column("step"), run.column("t"), run.attempts()
    markers = []
    for attempt in attempts:
        last = run.rows_of(attempt)[-1]
        ended = attempt != attempts[-1] or run.summary.get("status") not in ("succeeded", None)
        if ended:
            verb = "failed" if attempt != attempts[-1] else run.summary["status"]
            markers.append(Marker("failed", steps[last], times[last], f"attempt {attempt} {verb}"))
    resumed = {e.get("attempt"): e for e in run.events if e.get("type") == "resumed"}
    for recovery in run.summary.get("recoveries") or []:
        attempt = recovery["attempt"]
        event = resumed.get(attempt, {})
        step = event.get("step", recovery.get("resumed_step", 0))
        t = event.get("t") or next((times[i] for i in run.rows_of(attempt)), None)
        markers.append(Marker("resumed", step, t, f"attempt {attempt} resumed at step {step}"))
    return markers


def run_start(run: RunFiles) -> float:
    """Unix time the command started: first step minus the time to first step."""
    times = run.column("t")
    to_first = run.summary.get("time_to_first_step_s")
    if times and to_first is not None:
        return float(times[0] - to_first)
    event_times = [e["t"] for e in run.events if "t" in e]
    return float(min(event_times + times, default=0.0))


# ---------------------------------------------------------------- figures
# Figures are plain Plotly JSON (data + layout), built here without plotly's validation
# (which costs seconds a report); the unit tests validate them against plotly's schema.
