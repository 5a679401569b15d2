"""What Tune does not restore, the sweep's monitor carries in Tune's snapshots: ASHA's rungs
(so a resumed sweep stops a weak trial that a fresh scheduler would let run) and the
sweep's active time."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from rich.console import Console

from deepyard.spec.sweep_load import load_sweep
from deepyard.sweep.budget import BudgetPolicy, Ledger
from deepyard.sweep.monitor import SweepMonitor
from deepyard.sweep.space import trial_scheduler

EXAMPLE = Path(__file__).parents[3] / "jobs" / "sweeps" / "digits_sweep.yaml"


def _monitor(tmp_path: Path) -> SweepMonitor:
    sweep = load_sweep(EXAMPLE)  # ASHA, grace 40 steps, reduction factor 2, max accuracy
    scheduler = trial_scheduler(sweep)
    scheduler.set_search_properties(sweep.metric, sweep.mode)
    ledger = Ledger(BudgetPolicy(sweep.budget))
    return SweepMonitor(sweep, tmp_path, ledger, scheduler, Console(quiet=True))


def _result(scheduler: object, trial_id: str, accuracy: float) -> str:
    trial = SimpleNamespace(trial_id=trial_id)
    scheduler.on_trial_add(None, trial)  # type: ignore[attr-defined]
    result = {"step": 40, "accuracy": accuracy}
    return str(scheduler.on_trial_result(None, trial, result))  # type: ignore[attr-defined]


def test_asha_rungs_survive_a_driver_restart(tmp_path: Path) -> None:
    before = _monitor(tmp_path)
    assert _result(before.scheduler, "a", 0.9) == "CONTINUE"
    assert _result(before.scheduler, "b", 0.2) == "STOP"
    before.ledger.elapsed_before_s = 100.0
    state = before.get_state()

    restored = _monitor(tmp_path)  # a new driver: fresh scheduler and ledger
    restored.set_state(state)
    assert _result(restored.scheduler, "c", 0.5) == "STOP"  # below the rung's 0.9 / 0.2 cut
    assert restored.ledger.spend().elapsed_s >= 100.0
    fresh = _monitor(tmp_path)
    assert _result(fresh.scheduler, "c", 0.5) == "CONTINUE"  # what Tune alone would do
