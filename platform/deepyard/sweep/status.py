"""The sweep as its user watches it: one row per trial, the best so far, the spend.

The driver rewrites `status.json` in the sweep dir (atomically) as trials change;
`deepyard sweep status` renders the same table from it in another shell.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from rich.markup import escape
from rich.table import Table

STATUS_FILE = "status.json"

# Tune's trial states, as a user reads them; TERMINATED splits on whether it ran all steps.
_STATES = {"PENDING": "pending", "RUNNING": "running", "PAUSED": "paused", "ERROR": "failed"}


def trial_row(trial: Any, metric: str, max_steps: int | None) -> dict[str, Any]:
    """A Tune Trial as a plain row: id, state, config, step, metric, worker-hours, error."""
    result = trial.last_result or {}
    step: int | None = result.get("step")
    state = _STATES.get(trial.status, "finished")
    if trial.status == "TERMINATED":
        if step is None:
            state = "not run"  # queued when the budget ran out
        elif max_steps is not None and step < max_steps:
            state = "stopped early"
    row = {
        "id": trial.trial_id,
        "state": state,
        "config": {k: v for k, v in trial.config.items()},
        "step": step,
        metric: result.get(metric),
        "worker_hours": result.get("worker_hours", 0.0),
    }
    if trial.status == "ERROR":
        row["error"] = _first_error_line(trial)
    return row


def best_row(rows: list[dict[str, Any]], metric: str, mode: str) -> dict[str, Any] | None:
    """The best trial that ran all its steps; if none did yet, the best of the rest."""
    scored = [r for r in rows if r.get(metric) is not None]
    full = [r for r in scored if r["state"] == "finished"]
    pool = full or scored
    if not pool:
        return None
    pick = max if mode == "max" else min
    return pick(pool, key=lambda r: r[metric])


def write_status(sweep_dir: Path, status: dict[str, Any]) -> None:
    path = sweep_dir / STATUS_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(status, indent=1, default=str))
    os.replace(tmp, path)


def read_status(sweep_dir: Path) -> dict[str, Any] | None:
    path = sweep_dir / STATUS_FILE
    return json.loads(path.read_text()) if path.exists() else None


def driver_alive(status: dict[str, Any]) -> bool:
    """Whether the driver that wrote `status` still runs (on this machine)."""
    if status.get("state") != "running":
        return False
    try:
        os.kill(int(status["pid"]), 0)
    except (ProcessLookupError, KeyError, ValueError):
        return False
    except PermissionError:
        return True
    return True


def table(status: dict[str, Any]) -> Table:
    metric = status["metric"]
    best = (status.get("best") or {}).get("id")
    title = f"sweep {status['sweep']}: {status_line(status)}"
    out = Table("trial", "state", "params", "step", metric, "worker-h", title=escape(title))
    for row in status["trials"]:
        value = row.get(metric)
        shown = "" if value is None else f"{value:.4f}"
        mark = " *" if row["id"] == best else ""
        state = row["state"] + (f": {row['error']}" if row.get("error") else "")
        params = ", ".join(f"{k}={_short(v)}" for k, v in row["config"].items())
        out.add_row(
            escape(row["id"] + mark),
            escape(state),
            escape(params),
            "" if row["step"] is None else str(row["step"]),
            shown,
            f"{row['worker_hours']:.4f}",
        )
    return out


def count_states(rows: list[dict[str, Any]]) -> dict[str, int]:
    """How many trials are in each state, in the order states first appear."""
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["state"]] = counts.get(row["state"], 0) + 1
    return counts


def status_line(status: dict[str, Any]) -> str:
    counts = count_states(status["trials"])
    shown = ", ".join(f"{n} {state}" for state, n in counts.items()) or "no trials yet"
    spend = f"{status['worker_hours']:.3f} worker-h, {status['elapsed_s'] / 60:.1f} min"
    line = f"{status['state']}; {shown} of {status['num_trials']}; {spend}"
    if status.get("exhausted"):
        line += f"; {status['exhausted']}"
    return line


def stale_note(status: dict[str, Any]) -> str | None:
    """Why a 'running' status file may be out of date, in words; None if it is live."""
    if status.get("state") == "running" and not driver_alive(status):
        age = time.time() - float(status.get("updated", 0))
        return (
            f"the driver (pid {status.get('pid')}) is not running; this is the state "
            f"{age:.0f} s ago. Rerun `deepyard sweep run` (or `sweep resume`) to finish it."
        )
    return None


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _first_error_line(trial: Any) -> str:
    path = getattr(trial, "error_file", None) or ""
    try:
        lines = [ln for ln in Path(path).read_text().splitlines() if ln.strip()]
    except OSError:
        return "failed"
    return lines[-1][:200] if lines else "failed"
