"""What a person sees while a job runs: a rich progress bar on a terminal, plain log
lines otherwise (CI, files, pipes), and the summary table at the end."""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table


class ProgressDisplay:
    """Consumes the run's events; call `close()` when the run ends."""

    def __init__(self, job: str, log_every: int, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True)
        self.job = job
        self.log_every = log_every
        self.live = self.console.is_terminal
        self.total: int | None = None
        self.started = time.monotonic()
        self.progress: Progress | None = None
        self.task: Any = None

    def add(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if kind == "start":
            self.total = event["total_steps"]
            if self.progress is None:
                self._open()
            if self.progress is not None and event.get("start_step"):  # resumed
                self.progress.update(self.task, completed=event["start_step"])
        elif kind == "step":
            self._step(event)
        elif kind == "eval":
            shown = ", ".join(
                f"{k} {v:.4f}" for k, v in event["metrics"].items() if k != "num_samples"
            )
            self.note(f"eval at step {event['step']}: {shown}")
        elif kind == "resumed":
            saved_on, now_on = event["from_world_size"], event["world_size"]
            moved = f" (saved on {saved_on} workers, now {now_on})" if saved_on != now_on else ""
            self.note(
                f"resumed at step {event['step']} from {event['checkpoint']}{moved} "
                f"in {event['restore_s']:.1f}s"
            )
        elif kind == "checkpoint_saved" and self.progress is None:
            self.note(
                f"checkpoint step {event['step']} saved: {event['size_bytes'] / 2**20:.1f} MiB "
                f"in {event['write_s']:.2f}s"
            )

    def _open(self) -> None:
        if not self.live:
            self.note(f"training {self.total} steps")
            return
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TextColumn("step {task.completed}/{task.total}"),
            TextColumn("loss {task.fields[loss]}"),
            TextColumn("{task.fields[rate]} samples/s"),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            console=self.console,
        )
        self.progress.start()
        self.task = self.progress.add_task(self.job, total=self.total, loss="-", rate="-")

    def _step(self, event: dict[str, Any]) -> None:
        step = event["step"]
        if self.progress is not None:
            self.progress.update(
                self.task,
                completed=step,
                loss=f"{event['loss']:.4f}",
                rate=f"{event['samples_per_s']:.0f}",
            )
            return
        if step % self.log_every == 0 or step == self.total or step == 1:
            elapsed = time.monotonic() - self.started
            self.note(
                f"step {step}/{self.total} epoch {event['epoch']} loss {event['loss']:.4f} "
                f"lr {event['lr']:.2e} {event['samples_per_s']:.0f} samples/s "
                f"elapsed {elapsed:.0f}s"
            )

    def note(self, text: str) -> None:
        if self.progress is not None:
            self.progress.console.print(f"[dim]{time.strftime('%H:%M:%S')}[/] {text}")
        else:
            self.console.print(
                f"[{self.job}] {text}", markup=False, highlight=False, soft_wrap=True
            )

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None


def summary_table(summary: dict[str, Any]) -> Table:
    """The end-of-run table: steps, time, throughput, loss, evaluation metrics."""
    table = Table(title=f"{summary['job']} · run {summary['run_id']} · {summary['status']}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    rows: list[tuple[str, Any, str]] = [
        ("steps", summary.get("steps"), "{:d}"),
        ("epochs", summary.get("epochs"), "{:.2f}"),
        ("wall time (s)", summary.get("wall_time_s"), "{:.1f}"),
        ("time to first step (s)", summary.get("time_to_first_step_s"), "{:.1f}"),
        ("training time (s)", summary.get("train_time_s"), "{:.1f}"),
        ("samples/s", summary.get("samples_per_s"), "{:,.0f}"),
        ("final loss", summary.get("final_loss"), "{:.4f}"),
        ("attempts", summary.get("attempts"), "{:d}"),
        ("resumed at step", summary.get("start_step") or None, "{:d}"),
        ("checkpoints saved", (summary.get("checkpoints") or {}).get("saved"), "{:d}"),
    ]
    for name, value in (summary.get("eval") or {}).items():
        rows.append((f"test {name}", value, "{:,.0f}" if name == "num_samples" else "{:.4f}"))
    for name, value, fmt in rows:
        if value is not None:
            table.add_row(name, fmt.format(value))
    return table


def result_line(summary: dict[str, Any]) -> str:
    """One line for the end of a run: training time, throughput, MFU and goodput."""
    parts = [
        f"training {summary.get('train_time_s') or 0:.1f}s of {summary.get('wall_time_s', 0):.1f}s",
        f"{summary.get('samples_per_s') or 0:,.0f} samples/s",
    ]
    achieved = summary.get("achieved_flops_per_s")
    if summary.get("mfu") is not None:
        parts.append(f"MFU {summary['mfu']:.1%}")
    elif achieved:
        parts.append(f"{achieved / 1e9:,.2f} GFLOP/s (MFU n/a: no device peak)")
    if summary.get("goodput") is not None:
        parts.append(f"goodput {summary['goodput']:.0%}")
    return " · ".join(parts)
