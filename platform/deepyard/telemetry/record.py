"""Run records: the summary (JSON), per-step history (Parquet), evaluations (JSON) and
every other event (checkpoints, resumes, heartbeats: `events.jsonl`) of every run."""

from __future__ import annotations

import base64
import itertools
import json
import os
import secrets
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from deepyard.telemetry.flops import achieved_flops_per_s

HISTORY_COLUMNS = ("step", "epoch", "loss", "lr", "samples_per_s", "step_time_s", "t", "attempt")


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(2)


class RunRecorder:
    """Collects a run's events and writes `summary.json` and `history.parquet`: one row per
    step, HISTORY_COLUMNS then the task's own `step_columns` (a GAN's two losses)."""

    def __init__(
        self,
        run_dir: Path,
        job: str,
        run_id: str,
        started_at: float,
        step_columns: tuple[str, ...] = (),
    ) -> None:
        self.run_dir = run_dir
        self.step_columns = tuple(c for c in step_columns if c not in HISTORY_COLUMNS)
        self.job = job
        self.run_id = run_id
        self.started_at = started_at
        self.phases: dict[str, float] = {"command_start": started_at}
        self.steps: list[dict[str, Any]] = []
        self.evals: list[dict[str, Any]] = []
        self.events: list[dict[str, Any]] = []  # everything but steps, in arrival order
        self.start_info: dict[str, Any] = {}
        run_dir.mkdir(parents=True, exist_ok=True)
        # Written as they arrive: a driver killed mid-run still leaves its events.
        self._events_file = (run_dir / "events.jsonl").open("a", buffering=1)

    def write_spec(self, resolved: dict[str, Any], spec_hash: str) -> None:
        text = f"# resolved job spec, hash {spec_hash}\n" + yaml.safe_dump(
            resolved, sort_keys=False
        )
        (self.run_dir / "spec.yaml").write_text(text)

    def phase(self, name: str, t: float | None = None) -> None:
        self.phases.setdefault(name, time.time() if t is None else t)

    def add(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if kind == "image":  # the picture goes into the run; the record keeps its path
            event = self._write_image(event)
        if kind not in ("step", "rank_step", "heartbeat"):
            self.events.append(event)
            if not self._events_file.closed:  # late events (after finish) stay in memory
                self._events_file.write(json.dumps(event, default=float) + "\n")
        if kind == "phase" and event.get("attempt", 1) == 1:  # start-up of the first attempt
            self.phase(event["name"], event["t"])
        elif kind == "start":
            self.start_info = {k: v for k, v in event.items() if k != "type"}
        elif kind == "step":
            if not self.steps:
                self.phase("first_step", event["t"])
            row = {k: event.get(k, 1) for k in HISTORY_COLUMNS}
            self.steps.append(row | {k: event.get(k) for k in self.step_columns})
        elif kind == "eval":
            self.evals.append({"step": event["step"], **event["metrics"]})

    def _write_image(self, event: dict[str, Any]) -> dict[str, Any]:
        """Write an image event's PNG to RUN_DIR/<path> (atomically); the event without it."""
        relative = Path(event["path"])
        if relative.is_absolute() or ".." in relative.parts:
            raise ValueError(f"image path {relative} must stay inside the run directory")
        target = self.run_dir / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + ".tmp")
        tmp.write_bytes(base64.b64decode(event["png_base64"]))
        os.replace(tmp, target)
        return {k: v for k, v in event.items() if k != "png_base64"}

    def startup(self) -> dict[str, float]:
        """Seconds spent in each start-up phase, in the order they happened."""
        ordered = sorted(self.phases.items(), key=lambda kv: kv[1])
        return {
            name: round(t - prev_t, 3) for (_, prev_t), (name, t) in itertools.pairwise(ordered)
        }

    def finish(
        self, worker_summary: dict[str, Any] | None, status: str, error: str | None = None
    ) -> dict[str, Any]:
        first = self.phases.get("first_step")
        summary: dict[str, Any] = {
            "job": self.job,
            "run_id": self.run_id,
            "status": status,
            **(worker_summary or {}),
            "wall_time_s": round(time.time() - self.started_at, 3),
            "time_to_first_step_s": round(first - self.started_at, 3) if first else None,
            "startup_s": self.startup(),
            "run_dir": str(self.run_dir),
        }
        if self.start_info:
            summary["num_parameters"] = self.start_info.get("num_parameters")
        summary.update(self._efficiency(summary))
        if error:
            summary["error"] = error
        self._write_history()
        tmp = self.run_dir / "summary.json.tmp"
        tmp.write_text(json.dumps(summary, indent=2, default=float) + "\n")
        os.replace(tmp, self.run_dir / "summary.json")
        return summary

    def _efficiency(self, summary: dict[str, Any]) -> dict[str, Any]:
        """Goodput (productive step time over wall time; a redone step counts once) and
        model FLOP/s with MFU where the device's peak is known."""
        newest = {row["step"]: row["step_time_s"] for row in self.steps}
        out: dict[str, Any] = {
            "goodput": round(sum(newest.values()) / max(summary["wall_time_s"], 1e-9), 4)
        }
        achieved = achieved_flops_per_s(
            self.start_info.get("flops_per_sample"),
            self.start_info.get("flops_per_token"),
            summary.get("samples_per_s"),
            summary.get("tokens_per_s"),
        )
        if achieved:
            out["achieved_flops_per_s"] = round(achieved, 1)
            peak = self.start_info.get("peak_flops")
            out["mfu"] = round(achieved / peak, 4) if peak else None
        return out

    def _write_history(self) -> None:
        names = HISTORY_COLUMNS + self.step_columns
        columns = {c: [row[c] for row in self.steps] for c in names}
        pq.write_table(pa.table(columns), self.run_dir / "history.parquet")
        if self.evals:
            (self.run_dir / "evals.json").write_text(json.dumps(self.evals, indent=2) + "\n")
        self._events_file.close()
