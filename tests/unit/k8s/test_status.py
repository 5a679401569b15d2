"""RayJob status → TrainJob status: the phase table a KubeRay user would expect, attempts,
conditions that keep their transition time, and the metrics summary."""

from __future__ import annotations

from typing import Any

import pytest

from deepyard.k8s import status


def rayjob(suspend: bool = False, **state: Any) -> dict[str, Any]:
    return {"metadata": {"name": "j"}, "spec": {"suspend": suspend}, "status": state}


@pytest.mark.parametrize(
    ("job", "expected"),
    [
        (rayjob(suspend=True), "Queued"),
        (rayjob(jobDeploymentStatus="Suspended"), "Queued"),
        (rayjob(), "Starting"),
        (rayjob(jobDeploymentStatus="Initializing"), "Starting"),
        (rayjob(jobDeploymentStatus="Running", jobStatus="PENDING"), "Starting"),
        (rayjob(jobDeploymentStatus="Running", jobStatus="RUNNING"), "Running"),
        (rayjob(jobDeploymentStatus="Retrying", failed=1), "Retrying"),
        (rayjob(jobDeploymentStatus="Complete", jobStatus="SUCCEEDED"), "Succeeded"),
        (rayjob(jobDeploymentStatus="Complete", jobStatus="STOPPED"), "Failed"),
        (rayjob(jobDeploymentStatus="Failed", reason="DeadlineExceeded"), "Failed"),
        (rayjob(jobDeploymentStatus="ValidationFailed"), "Failed"),
    ],
)
def test_phase_follows_kuberay(job, expected) -> None:
    assert status.phase_of(job) == expected


def test_attempts_count_kuberay_retries() -> None:
    running_again = rayjob(jobDeploymentStatus="Running", jobStatus="RUNNING", failed=1)
    assert status.from_rayjob(running_again)["attempts"] == 2
    failed_for_good = rayjob(jobDeploymentStatus="Failed", failed=3)
    assert status.from_rayjob(failed_for_good)["attempts"] == 3
    assert status.from_rayjob(rayjob(suspend=True))["attempts"] == 0


def test_conditions_keep_their_transition_time() -> None:
    job = rayjob(jobDeploymentStatus="Running", jobStatus="RUNNING")
    first = status.from_rayjob(job, None, now="2026-12-07T10:00:00Z")
    again = status.from_rayjob(job, first, now="2026-12-07T10:05:00Z")
    assert again["conditions"] == first["conditions"]
    done = rayjob(jobDeploymentStatus="Complete", jobStatus="SUCCEEDED")
    later = status.from_rayjob(done, again, now="2026-12-07T11:00:00Z")
    times = {c["type"]: c["lastTransitionTime"] for c in later["conditions"]}
    assert times == {
        "Admitted": "2026-12-07T10:00:00Z",
        "Running": "2026-12-07T11:00:00Z",
        "Succeeded": "2026-12-07T11:00:00Z",
        "Failed": "2026-12-07T10:00:00Z",
    }


def test_metrics_summary_takes_the_newest_step_over_ranks() -> None:
    text = (
        'deepyard_train_step{job="j",rank="0"} 7\n'
        'deepyard_train_step{job="j",rank="1"} 9\n'
        'deepyard_job_attempt{job="j"} 2\n'
        "unrelated_metric 1\n"
    )
    assert status.summarize_metrics(text) == {"step": 9, "attempt": 2}


def test_last_checkpoint_step_goes_to_the_status_top_level() -> None:
    text = (
        "# TYPE deepyard_checkpoint_last_step gauge\n"
        'deepyard_checkpoint_last_step{job="j",run="r1"} 200\n'
        "# TYPE deepyard_checkpoint_saves_total counter\n"
        'deepyard_checkpoint_saves_total{job="j",run="r1"} 3\n'
        'deepyard_train_step{job="j",rank="0"} 230\n'
    )
    summary = status.summarize_metrics(text)
    assert summary == {"lastCheckpointStep": 200, "checkpointsSaved": 3, "step": 230}
    assert status.metrics_status(summary) == {
        "lastCheckpointStep": 200,
        "metrics": {"checkpointsSaved": 3, "step": 230},
    }
    # before the first checkpoint the gauge is absent, and so is the field
    before = status.summarize_metrics('deepyard_train_step{job="j",rank="0"} 5\n')
    assert status.metrics_status(before) == {"metrics": {"step": 5}}


def test_sweep_summary_counts_trials_and_keeps_the_best() -> None:
    text = (
        'deepyard_sweep_trials{job="s",state="running"} 2\n'
        'deepyard_sweep_trials{job="s",state="finished"} 3\n'
        'deepyard_sweep_trials{job="s",state="stopped early"} 1\n'
        'deepyard_sweep_trials{job="s",state="failed"} 1\n'
        'deepyard_sweep_trials{job="s",state="pending"} 4\n'
        'deepyard_sweep_best_metric{job="s",metric="accuracy"} 0.93\n'
        'deepyard_train_step{job="s",run="r1",rank="0"} 40\n'  # a trial's series: not ours
    )
    assert status.summarize_sweep(text) == {
        "trialsRunning": 2,
        "trialsDone": 5,
        "trialsFailed": 1,
        "bestMetric": 0.93,
        "metric": "accuracy",
    }
    assert status.summarize_sweep('deepyard_train_step{job="s"} 1\n') == {}
