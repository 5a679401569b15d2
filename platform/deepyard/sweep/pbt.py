"""Tune's PBT, less one wasted move: no perturbation at a trial's last step.

A trial reports STEPS_LEFT with each evaluation (sweep/trial.py). PBT would still judge
a trial's final report when it lands on a perturbation interval: the weak trial would
copy a finished model and restart for nothing, and synchronous PBT would pause a trial
that had finished, to restore it once more for no steps. Here a final report only
records the result.

ray.tune is imported on first use: importing it costs seconds.
"""

from __future__ import annotations

from typing import Any

STEPS_LEFT = "steps_left"


def scheduler(**options: Any) -> Any:
    """A PopulationBasedTraining (Tune's options) that skips trials' final reports."""
    from ray.tune.schedulers import PopulationBasedTraining, TrialScheduler

    class FinalStepsKept(PopulationBasedTraining):
        def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
            if result.get(STEPS_LEFT) == 0:
                return TrialScheduler.CONTINUE
            decision: str = super().on_trial_result(tune_controller, trial, result)
            return decision

    return FinalStepsKept(**options)
