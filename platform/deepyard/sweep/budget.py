"""What a sweep has spent, and what to do when its budget runs out.

Worker-hours are each trial's own count (workers x wall time it held them, start-up
included, summed over its resumes), as it last reported it. Time is the sweep's active
wall time, summed over driver runs: a sweep that sat dead overnight has not used the night.
`BudgetPolicy.decide()` turns the spend into a decision; the searcher's gate (no new
trials) and `BudgetStopper` (stop running ones) act on it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from ray.tune.stopper import Stopper

from deepyard.spec.sweep import BudgetSpec

Action = Literal["continue", "finish", "stop"]


@dataclass(frozen=True)
class Spend:
    worker_hours: float
    elapsed_s: float


@dataclass(frozen=True)
class BudgetDecision:
    action: Action  # finish: start no new trial; stop: stop running trials too
    reason: str | None = None  # which limit ran out, in words

    @property
    def may_start(self) -> bool:
        return self.action == "continue"


class BudgetPolicy:
    def __init__(self, budget: BudgetSpec) -> None:
        self.budget = budget

    def decide(self, spend: Spend) -> BudgetDecision:
        limit_h, limit_min = self.budget.worker_hours, self.budget.time_limit_minutes
        reason = None
        if limit_h is not None and spend.worker_hours >= limit_h:
            reason = f"worker-hours budget spent ({spend.worker_hours:.3f} of {limit_h:g})"
        elif limit_min is not None and spend.elapsed_s >= limit_min * 60:
            reason = f"time limit reached ({spend.elapsed_s / 60:.1f} of {limit_min:g} minutes)"
        if reason is None:
            return BudgetDecision("continue")
        return BudgetDecision(self.budget.on_exhausted, reason)


class Ledger:
    """The sweep's spend, fed from Tune's trial list by the monitor callback."""

    def __init__(
        self,
        policy: BudgetPolicy,
        on_exhausted: Callable[[BudgetDecision], None] = lambda decision: None,
    ) -> None:
        self.policy, self.on_exhausted = policy, on_exhausted
        self.elapsed_before_s = 0.0
        self.started = time.monotonic()
        self.hours: dict[str, float] = {}
        self.exhausted: BudgetDecision | None = None  # the first decision that was not continue

    def record(self, trial_id: str, result: dict[str, Any]) -> None:
        if "worker_hours" in result:
            self.hours[trial_id] = float(result["worker_hours"])

    def spend(self) -> Spend:
        return Spend(
            sum(self.hours.values()), self.elapsed_before_s + time.monotonic() - self.started
        )

    def decide(self) -> BudgetDecision:
        decision = self.policy.decide(self.spend())
        if not decision.may_start and self.exhausted is None:
            self.exhausted = decision
            self.on_exhausted(decision)
        return decision

    def may_start(self) -> bool:
        return self.decide().may_start


class BudgetStopper(Stopper):
    """Stops every running trial once a budget with on_exhausted: stop runs out."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        self.ledger.record(trial_id, result)
        self.ledger.decide()  # at once: a queued trial must see the budget before it starts
        return False

    def stop_all(self) -> bool:
        return self.ledger.decide().action == "stop"
