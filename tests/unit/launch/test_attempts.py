"""Restart decisions and the recovery record a user reads in the summary."""

from __future__ import annotations

from deepyard.errors import CheckpointError, DataError, RetryableError, SpecError, TrainingError
from deepyard.launch.attempts import Attempts, FailurePolicy


def test_policy_retries_lost_and_failed_workers_until_restarts_run_out() -> None:
    policy = FailurePolicy(max_restarts=2)
    lost = RetryableError("worker rank 1 (pid 9) died")
    assert policy.decide(lost, attempt=1) and policy.decide(lost, attempt=2)
    assert not policy.decide(lost, attempt=3)
    assert policy.decide(TrainingError("RuntimeError: boom", 0), attempt=1)


def test_policy_never_retries_what_the_user_must_fix() -> None:
    policy = FailurePolicy(max_restarts=5)
    for error in (SpecError("bad"), DataError("bad"), CheckpointError("disk full")):
        assert not policy.decide(error, attempt=1)
    assert not policy.decide(KeyboardInterrupt(), attempt=1)


def test_recovery_record_counts_redone_steps_and_time_to_first_step() -> None:
    attempts = Attempts()
    for step in range(1, 15):
        attempts.observe({"type": "step", "step": step, "t": 100.0 + step})
    attempts.failed(RetryableError("worker rank 1 (pid 9) died: killed\nmore"))
    failed_t = attempts._open["failed_t"] if attempts._open else 0.0
    attempts.observe({"type": "resumed", "step": 10, "restore_s": 0.5, "t": failed_t + 5})
    attempts.observe({"type": "step", "step": 11, "t": failed_t + 9})
    summary = attempts.summary()
    assert summary["attempts"] == 2
    [recovery] = summary["recoveries"]
    assert recovery["cause"] == "worker rank 1 (pid 9) died: killed"
    assert recovery["steps_redone"] == 4 and recovery["resumed_step"] == 10
    assert recovery["first_step_s"] == 9.0 and recovery["restore_s"] == 0.5


def test_a_recovery_is_recorded_even_when_rank0_dies_before_sending_its_steps() -> None:
    """Attempt 2 trains a few steps and rank 0 is killed before the driver drains them:
    the other rank's steps still complete attempt 2's recovery record."""
    attempts = Attempts()
    for step in range(1, 7):
        attempts.observe({"type": "step", "step": step, "t": 100.0 + step})
    attempts.failed(RetryableError("no step progress for 5 s"))
    attempts.observe({"type": "resumed", "step": 5, "restore_s": 0.1, "t": 200.0})
    attempts.observe({"type": "rank_step", "rank": 1, "step": 6, "t": 201.0})
    attempts.observe({"type": "rank_step", "rank": 1, "step": 12, "t": 202.0})
    attempts.failed(RetryableError("worker rank 0 (pid 9) died"))
    attempts.observe({"type": "resumed", "step": 10, "restore_s": 0.1, "t": 300.0})
    attempts.observe({"type": "step", "step": 11, "t": 301.0})
    hang, crash = attempts.summary()["recoveries"]
    assert (hang["attempt"], hang["resumed_step"], hang["steps_redone"]) == (2, 5, 1)
    assert (crash["attempt"], crash["resumed_step"], crash["steps_redone"]) == (3, 10, 2)
