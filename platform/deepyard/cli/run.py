"""`deepyard run`: validate, prepare data, train on Ray, record and show the run."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import psutil
from rich.console import Console

from deepyard import spec as specs
from deepyard.data import resolve_sources
from deepyard.errors import DeepyardError, TrainingError
from deepyard.telemetry import ProgressDisplay, RunRecorder, new_run_id, summary_table
from deepyard.train.loop import Sources


def command_start_time() -> float:
    """When this process started: start-up figures count from the user's command.

    From /proc (10 ms resolution) where it exists; psutil's create_time() is rounded to
    the boot time's whole second on Linux.
    """
    try:
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        age = uptime - int(fields[19]) / os.sysconf("SC_CLK_TCK")
        return time.time() - age
    except (OSError, ValueError, IndexError):
        try:
            return float(psutil.Process().create_time())
        except psutil.Error:
            return time.time()


def run(file: Path, overrides: list[str], address: str | None, as_json: bool) -> dict[str, Any]:
    started_at = command_start_time()
    spec = specs.load(file, overrides)
    train_uri, eval_uri = resolve_sources(spec.data)
    run_id = new_run_id()
    recorder = RunRecorder(
        Path(spec.output_dir) / spec.name / run_id, spec.name, run_id, started_at
    )
    recorder.write_spec(spec.model_dump(mode="json"), specs.spec_hash(spec))
    recorder.phase("spec_loaded")
    display = ProgressDisplay(spec.name, spec.training.log_every_steps)

    def on_event(event: dict[str, Any]) -> None:
        recorder.add(event)
        display.add(event)

    from deepyard.launch.local import run_job

    try:
        worker_summary = run_job(
            spec, Sources(train_uri, eval_uri), on_event, display.note, address
        )
    except KeyboardInterrupt:
        display.close()
        recorder.finish(None, "stopped", "stopped by Ctrl-C")
        raise
    except DeepyardError as exc:
        display.close()
        if isinstance(exc, TrainingError) and exc.worker_traceback:
            (recorder.run_dir / "error.txt").write_text(exc.worker_traceback)
            exc.args = (f"{exc}\n  full worker traceback: {recorder.run_dir / 'error.txt'}",)
        recorder.finish(None, "failed", str(exc))
        raise
    display.close()
    summary = recorder.finish(worker_summary, "succeeded")
    Console(file=sys.stderr if as_json else sys.stdout).print(summary_table(summary))
    if as_json:
        print(json.dumps(summary, default=float))
    return summary
