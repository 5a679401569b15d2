"""Budgets: which limit ran out decides what happens (finish or stop), once; the best trial
is one that ran all its steps whenever there is one."""

from __future__ import annotations

from deepyard.spec.sweep import BudgetSpec
from deepyard.sweep.budget import BudgetDecision, BudgetPolicy, BudgetStopper, Ledger, Spend
from deepyard.sweep.status import best_row


def test_policy_names_the_limit_that_ran_out() -> None:
    policy = BudgetPolicy(BudgetSpec(worker_hours=1.0, time_limit_minutes=10, on_exhausted="stop"))
    assert policy.decide(Spend(0.5, 60)).action == "continue"
    hours = policy.decide(Spend(1.0, 60))
    assert (hours.action, hours.reason) == ("stop", "worker-hours budget spent (1.000 of 1)")
    late = policy.decide(Spend(0.1, 601))
    assert late.action == "stop" and late.reason == "time limit reached (10.0 of 10 minutes)"
    assert BudgetPolicy(BudgetSpec()).decide(Spend(1e9, 1e9)).may_start


def test_ledger_sums_each_trials_latest_hours_and_reports_exhaustion_once() -> None:
    seen: list[BudgetDecision] = []
    ledger = Ledger(BudgetPolicy(BudgetSpec(worker_hours=1.0)), seen.append)
    stopper = BudgetStopper(ledger)
    stopper("a", {"worker_hours": 0.4})
    stopper("a", {"worker_hours": 0.6})  # cumulative per trial: replaces, not adds
    assert ledger.spend().worker_hours == 0.6 and ledger.may_start() and not seen
    stopper("b", {"worker_hours": 0.5})
    assert not ledger.may_start() and not stopper.stop_all()  # finish: running ones go on
    ledger.decide()
    assert [d.action for d in seen] == ["finish"]


def test_best_prefers_trials_that_ran_all_their_steps() -> None:
    rows = [
        {"id": "early", "state": "stopped early", "accuracy": 0.99},
        {"id": "full", "state": "finished", "accuracy": 0.9},
        {"id": "worse", "state": "finished", "accuracy": 0.8},
        {"id": "none", "state": "failed", "accuracy": None},
    ]
    assert best_row(rows, "accuracy", "max")["id"] == "full"
    assert best_row(rows, "accuracy", "min")["id"] == "worse"
    assert best_row(rows[:1], "accuracy", "max")["id"] == "early"
    assert best_row(rows[3:], "accuracy", "max") is None
