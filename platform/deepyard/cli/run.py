"""`deepyard run`: validate, prepare data, train on Ray, record and show the run."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from rich.console import Console

from deepyard import spec as specs
from deepyard.data import resolve_sources
from deepyard.errors import DeepyardError, TrainingError
from deepyard.telemetry import result_line, summary_table
from deepyard.telemetry.session import command_start_time, open_run
from deepyard.train.loop import Sources


def run(
    file: Path, overrides: list[str], address: str | None, as_json: bool, restart: bool = False
) -> dict[str, Any]:
    """Run the job; the summary's status is succeeded or preempted (SIGTERM, checkpointed)."""
    started_at = command_start_time()
    spec = specs.load(file, overrides)
    train_uri, eval_uri = resolve_sources(spec.data)
    session = open_run(spec, started_at)
    recorder, display = session.recorder, session.display
    recorder.phase("spec_loaded")

    from deepyard.launch.local import JobRunner

    runner = JobRunner(
        spec,
        Sources(train_uri, eval_uri),
        session.emit,
        display.note,
        recorder.run_id,
        restart,
        recorder.run_dir,
    )
    try:
        worker_summary = runner.run(address)
    except KeyboardInterrupt:
        session.finish(runner.attempts.summary(), "stopped", "stopped by Ctrl-C")
        raise
    except DeepyardError as exc:
        if isinstance(exc, TrainingError) and exc.worker_traceback:
            (recorder.run_dir / "error.txt").write_text(exc.worker_traceback)
            exc.args = (f"{exc}\n  full worker traceback: {recorder.run_dir / 'error.txt'}",)
        session.finish(runner.attempts.summary(), "failed", str(exc))
        raise
    preempted = worker_summary.get("outcome") == "preempted"
    summary = session.finish(worker_summary, "preempted" if preempted else "succeeded")
    out = Console(file=sys.stderr if as_json else sys.stdout)
    out.print(summary_table(summary))
    out.print(result_line(summary))
    if as_json:
        print(json.dumps(summary, default=float))
    return summary
