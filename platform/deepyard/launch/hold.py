"""Holding a trial's ranks at each evaluation until the driver has passed it on.

Ranks push events into a queue the driver drains; they do not wait for it. For a PBT
trial that matters: Tune judges, pauses or copies a trial by the step it *reported*,
and ranks that trained on meanwhile would be paused or copied steps later (under load,
at their last step, leaving nothing to train). With `AttemptPlan.hold_after_eval`
every rank waits after each evaluation inside the run (and its checkpoint, when one is
due) until the driver has handed that evaluation on, which for a Tune trial returns only
once Tune lets the trial continue; when Tune pauses the trial instead, its ranks are
stopped where they wait, at the reported step.
"""

from __future__ import annotations

import threading


class Hold:
    """One rank's side: `wait(step)` blocks until `release(step)` (or a stop request)."""

    def __init__(self, stop: threading.Event) -> None:
        self._stop = stop
        self._released = 0
        self._changed = threading.Condition()

    def wait(self, step: int) -> None:
        with self._changed:
            while self._released < step and not self._stop.is_set():
                # wakes on release(); the timeout re-checks a stop request (its own event)
                self._changed.wait(timeout=1.0)

    def release(self, step: int) -> None:
        with self._changed:
            self._released = max(self._released, step)
            self._changed.notify_all()
