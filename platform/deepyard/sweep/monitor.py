"""The sweep driver's eyes: a Tune callback that keeps the ledger, status.json and the
display current, and carries what Tune does not restore itself across a driver restart
(the sweep's active time, and the ASHA scheduler's rungs) in Tune's own snapshots."""

from __future__ import annotations

import contextlib
import os
import pickle
import time
from pathlib import Path
from typing import Any

from ray.tune import Callback
from rich.console import Console
from rich.live import Live
from rich.markup import escape

from deepyard.spec.sweep import SweepSpec
from deepyard.sweep.budget import Ledger
from deepyard.sweep.status import best_row, status_line, table, trial_row, write_status

REFRESH_S = 1.0


class SweepMonitor(Callback):
    def __init__(
        self, sweep: SweepSpec, sweep_dir: Path, ledger: Ledger, scheduler: Any, console: Console
    ) -> None:
        self.sweep, self.sweep_dir, self.ledger = sweep, sweep_dir, ledger
        self.scheduler, self.console = scheduler, console
        self.live: Live | None = None
        self.states: dict[str, str] = {}
        self.refreshed = 0.0
        self.status: dict[str, Any] = {}

    # Tune's hooks -------------------------------------------------------------------
    def on_step_begin(self, iteration: int, trials: list[Any], **info: Any) -> None:
        if time.monotonic() - self.refreshed >= REFRESH_S:
            self.refresh(trials)

    def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self.refresh(trials)

    def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self.refresh(trials)

    def on_experiment_end(self, trials: list[Any], **info: Any) -> None:
        self.refresh(trials)
        if self.live is not None:
            self.live.stop()
            self.live = None

    def get_state(self) -> dict[str, Any]:
        state: dict[str, Any] = {"elapsed_s": self.ledger.spend().elapsed_s}
        if _restorable(self.scheduler):
            with contextlib.suppress(Exception):  # a scheduler that cannot pickle starts afresh
                state["scheduler"] = pickle.dumps(self.scheduler.__dict__)
        return state

    def set_state(self, state: dict[str, Any]) -> None:
        self.ledger.elapsed_before_s = float(state.get("elapsed_s", 0.0))
        self.ledger.started = time.monotonic()
        if "scheduler" in state and _restorable(self.scheduler):
            self.scheduler.__dict__.update(pickle.loads(state["scheduler"]))

    # ours ---------------------------------------------------------------------------
    def refresh(self, trials: list[Any], state: str = "running") -> dict[str, Any]:
        self.refreshed = time.monotonic()
        sweep = self.sweep
        for trial in trials:  # results arrive through BudgetStopper; restored trials here
            self.ledger.record(trial.trial_id, trial.last_result or {})
        rows = [trial_row(t, sweep.metric, sweep.max_steps) for t in trials]
        spend = self.ledger.spend()
        decision = self.ledger.decide()
        self.status = {
            "sweep": sweep.name,
            "dir": str(self.sweep_dir),
            "pid": os.getpid(),
            "state": state,
            "updated": time.time(),
            "metric": sweep.metric,
            "mode": sweep.mode,
            "num_trials": sweep.num_trials,
            "worker_hours": spend.worker_hours,
            "elapsed_s": spend.elapsed_s,
            "exhausted": (self.ledger.exhausted or decision).reason,
            "trials": rows,
            "best": best_row(rows, sweep.metric, sweep.mode),
        }
        write_status(self.sweep_dir, self.status)
        self._show(rows)
        return self.status

    def _show(self, rows: list[dict[str, Any]]) -> None:
        if self.console.is_terminal:
            if self.live is None:
                self.live = Live(console=self.console, auto_refresh=False)
                self.live.start()
            self.live.update(table(self.status), refresh=True)
            return
        changed = [r for r in rows if self.states.get(r["id"]) != r["state"]]
        for row in changed:  # not a terminal (CI, a log file): one line per change of state
            self.states[row["id"]] = row["state"]
            self.console.print(escape(_change_line(row, self.sweep.metric)))
        if any(r["state"] not in ("pending", "running") for r in changed):
            self.console.print(escape(status_line(self.status)), style="dim")


def quiet_tune_progress() -> Any:
    """Tune's own per-trial lines, silenced: the monitor's table says it once, better.
    (Tune adds its printer unless one is among the callbacks.)"""
    from ray.tune.progress_reporter import TrialProgressCallback

    class Quiet(TrialProgressCallback):
        def _print(self, msg: str) -> None:
            pass

    return Quiet()


def _change_line(row: dict[str, Any], metric: str) -> str:
    params = ", ".join(
        f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row["config"].items()
    )
    line = f"trial {row['id']} {row['state']}"
    if row["state"] in ("pending", "running"):
        return f"{line} ({params})"
    if row.get(metric) is not None:
        line += f": {metric} {row[metric]:.4f} at step {row['step']}"
    if row.get("error"):
        line += f": {row['error']}"
    return f"{line}, {row['worker_hours']:.4f} worker-h"


def _restorable(scheduler: Any) -> bool:
    """Schedulers whose state is plain data (ASHA's rungs); HyperBand and PBT hold Trial
    objects and restart their bookkeeping from the restored trials."""
    from ray.tune.schedulers import AsyncHyperBandScheduler, FIFOScheduler

    return isinstance(scheduler, AsyncHyperBandScheduler | FIFOScheduler)
