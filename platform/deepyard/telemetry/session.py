"""One run as the person who started it sees it: its record on disk and its live display,
fed by the same events. Shared by `deepyard run` and `python -m deepyard.train`."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
from rich.console import Console

from deepyard import spec as specs
from deepyard.tasks.catalog import info
from deepyard.telemetry.exporter import MetricsExporter
from deepyard.telemetry.progress import ProgressDisplay
from deepyard.telemetry.record import RunRecorder, new_run_id


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


@dataclass
class RunSession:
    recorder: RunRecorder
    display: ProgressDisplay
    exporter: MetricsExporter | None = None

    def emit(self, event: dict[str, Any]) -> None:
        self.recorder.add(event)
        if event.get("type") != "rank_step":
            self.display.add(event)
        if self.exporter is not None:
            self.exporter.observe(event)

    def finish(
        self, worker_summary: dict[str, Any] | None, status: str, error: str | None = None
    ) -> dict[str, Any]:
        """Close the display, write the run record, stop serving metrics."""
        self.display.close()
        summary = self.recorder.finish(worker_summary, status, error)
        if self.exporter is not None:
            self.exporter.stop(status)
        return summary


def open_run(spec: specs.JobSpec, started_at: float, console: Console | None = None) -> RunSession:
    """A new run directory under output_dir/name/, holding the resolved spec, and its display
    (on stderr, or on `console`)."""
    run_id = new_run_id()
    recorder = RunRecorder(
        Path(spec.output_dir) / spec.name / run_id,
        spec.name,
        run_id,
        started_at,
        step_columns=info(spec.task_name).step_metrics,
    )
    recorder.write_spec(spec.model_dump(mode="json"), specs.spec_hash(spec))
    display = ProgressDisplay(spec.name, spec.training.log_every_steps, console)
    session = RunSession(recorder, display)
    if spec.telemetry.metrics:
        session.exporter = MetricsExporter(spec, run_id, started_at, specs.spec_hash(spec))
        address = session.exporter.start()
        session.display.note(f"metrics: http://{address}/metrics")
    return session
