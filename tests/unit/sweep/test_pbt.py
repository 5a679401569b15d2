"""deepyard's PBT: Tune's, except that a trial's final report is never perturbed (a copy
of a finished model leaves nothing to train), and the trial's ranks wait at each
evaluation until Tune has judged it (so Tune pauses and copies the step it judged)."""

from __future__ import annotations

import threading
import time
from typing import Any

from deepyard.launch.hold import Hold
from deepyard.spec.sweep import SweepSpec
from deepyard.sweep.pbt import STEPS_LEFT
from deepyard.sweep.space import trial_scheduler


def _pbt(synch: bool) -> Any:
    sweep = SweepSpec.model_validate(
        {
            "name": "pbt",
            "job": {
                "name": "base",
                "model": {"name": "mlp"},
                "data": {"dataset": "digits", "batch_size": 8},
                "training": {"epochs": None, "max_steps": 80, "eval_every_steps": 20},
                "checkpoint": {"every_steps": 20},
            },
            "space": {"optimizer.lr": {"type": "loguniform", "low": 1e-4, "high": 1e-1}},
            "scheduler": {"name": "pbt", "perturbation_interval_steps": 40, "synch": synch},
            "budget": {"max_trials": 2},
            "metric": "loss",
            "mode": "min",
        }
    )
    scheduler = trial_scheduler(sweep)
    scheduler.set_search_properties("loss", "min")
    return scheduler


class _Tune:
    """What PBT reads of Tune's controller before it perturbs."""

    search_alg = None

    def __init__(self, trials: list[Any]) -> None:
        self.trials = trials

    def get_trials(self) -> list[Any]:
        return self.trials

    def get_live_trials(self) -> list[Any]:
        return self.trials


def _trials(scheduler: Any, tune: _Tune) -> list[Any]:
    from ray.tune.experiment import Trial

    for name in ("a", "b"):
        trial = Trial("trainable", config={}, trial_id=name, stub=True)
        trial.status = Trial.RUNNING
        tune.trials.append(trial)
        scheduler.on_trial_add(tune, trial)
    return tune.trials


def test_a_synch_trial_is_paused_at_an_interval_but_not_at_its_last_step() -> None:
    scheduler = _pbt(synch=True)
    tune = _Tune([])
    a, _ = _trials(scheduler, tune)
    # a reaches the interval before b: synchronous PBT pauses it until b gets there ...
    at_interval = {"step": 40, "loss": 1.0, STEPS_LEFT: 40}
    assert scheduler.on_trial_result(tune, a, at_interval) == "PAUSE"
    # ... but a report with no steps left ends the trial instead: pausing it would only
    # restore it later, for nothing, or have the other trial copy a finished model.
    scheduler = _pbt(synch=True)
    tune = _Tune([])
    a, _ = _trials(scheduler, tune)
    final = {"step": 40, "loss": 1.0, STEPS_LEFT: 0}
    assert scheduler.on_trial_result(tune, a, final) == "CONTINUE"


def test_a_held_rank_trains_on_only_once_its_step_is_released() -> None:
    stop = threading.Event()
    hold = Hold(stop)
    passed: list[int] = []
    rank = threading.Thread(target=lambda: (hold.wait(40), passed.append(40)))
    rank.start()
    hold.release(20)  # an earlier evaluation's release does not let step 40 through
    time.sleep(0.3)
    assert passed == [] and rank.is_alive()
    hold.release(40)
    rank.join(timeout=5)
    assert passed == [40]
    hold.wait(40)  # released already: no wait


def test_a_stop_request_ends_the_hold() -> None:
    stop = threading.Event()
    hold = Hold(stop)
    rank = threading.Thread(target=hold.wait, args=(60,))
    rank.start()
    stop.set()  # preemption while the trial waits for Tune: checkpoint and stop
    rank.join(timeout=5)
    assert not rank.is_alive()
