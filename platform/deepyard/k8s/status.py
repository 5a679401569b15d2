"""RayJob status (and the driver's /metrics) → the TrainJob's status: phase, conditions,
attempts, reason, metrics summary. Pure functions; the operator patches what they return.

KubeRay's `jobDeploymentStatus` says where the RayJob's machinery is (Suspended, Initializing,
Running, Retrying, Complete, Failed...), `jobStatus` what the Ray job itself did (PENDING,
RUNNING, SUCCEEDED, FAILED, STOPPED); `failed`/`succeeded` count attempts.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from typing import Any

PHASES = ("Queued", "Starting", "Running", "Retrying", "Succeeded", "Failed")
CONDITIONS = ("Admitted", "Running", "Succeeded", "Failed")


def phase_of(rayjob: dict[str, Any]) -> str:
    status = rayjob.get("status") or {}
    deployment = status.get("jobDeploymentStatus") or ""
    job = status.get("jobStatus") or ""
    if deployment in ("Suspended", "Suspending") or (
        (rayjob.get("spec") or {}).get("suspend") and deployment in ("", "New")
    ):
        return "Queued"
    if deployment in ("Failed", "ValidationFailed"):
        return "Failed"
    if deployment == "Complete":
        return "Succeeded" if job == "SUCCEEDED" else "Failed"
    if deployment == "Retrying":
        return "Retrying"
    if deployment == "Running" and job == "RUNNING":
        return "Running"
    return "Starting"


def attempts_of(rayjob: dict[str, Any], phase: str) -> int:
    """Attempts started so far (a RayJob retry is a new attempt on a new cluster)."""
    status = rayjob.get("status") or {}
    done = int(status.get("failed") or 0) + int(status.get("succeeded") or 0)
    if phase == "Queued":
        return done
    return done if phase in ("Succeeded", "Failed") and done else done + 1


def from_rayjob(
    rayjob: dict[str, Any], previous: dict[str, Any] | None = None, now: str | None = None
) -> dict[str, Any]:
    """The TrainJob status fields that follow the RayJob (a patch for `.status`)."""
    status = rayjob.get("status") or {}
    phase = phase_of(rayjob)
    now = now or datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    reason, message = _reason(status, phase)
    patch: dict[str, Any] = {
        "phase": phase,
        "attempts": attempts_of(rayjob, phase),
        "rayJobName": rayjob["metadata"]["name"],
        "reason": reason,
        "message": message,
        "conditions": conditions(phase, reason, message, (previous or {}).get("conditions"), now),
    }
    for ours, theirs in (
        ("rayClusterName", "rayClusterName"),
        ("dashboardURL", "dashboardURL"),
        ("startTime", "startTime"),
        ("endTime", "endTime"),
    ):
        if status.get(theirs):
            patch[ours] = status[theirs]
    return patch


def _reason(status: dict[str, Any], phase: str) -> tuple[str, str]:
    if phase == "Queued":
        return "Suspended", "waiting for Kueue to admit the workload (RayJob suspended)"
    if phase == "Failed":
        reason = status.get("reason") or status.get("jobStatus") or "Failed"
        message = status.get("message") or f"the RayJob failed ({reason})"
        return reason, message
    if phase == "Retrying":
        return "Retrying", status.get("message") or "KubeRay is retrying on a new RayCluster"
    if phase == "Succeeded":
        return "Succeeded", status.get("message") or "training finished"
    if phase == "Running":
        return "Running", "training on the RayCluster"
    return "Starting", status.get("message") or "the RayCluster is starting"


def conditions(
    phase: str, reason: str, message: str, previous: list[dict] | None, now: str
) -> list[dict[str, Any]]:
    """Kubernetes-style conditions; a condition keeps its lastTransitionTime while its
    status stays the same."""
    truth = {
        "Admitted": phase != "Queued",
        "Running": phase == "Running",
        "Succeeded": phase == "Succeeded",
        "Failed": phase == "Failed",
    }
    before = {c["type"]: c for c in previous or []}
    out = []
    for kind in CONDITIONS:
        state = "True" if truth[kind] else "False"
        old = before.get(kind)
        since = old["lastTransitionTime"] if old and old.get("status") == state else now
        entry = {"type": kind, "status": state, "lastTransitionTime": since}
        if truth[kind] or kind == "Admitted":
            entry |= {"reason": reason, "message": message}
        out.append(entry)
    return out


STATUS_FIELDS = ("lastCheckpointStep",)  # summary keys that are top-level status fields


def summarize_metrics(text: str) -> dict[str, Any]:
    """The job's Prometheus exposition → a small summary (newest step, loss, attempt,
    checkpoints saved, the newest checkpoint's step); `metrics_status` places it."""
    from prometheus_client.parser import text_string_to_metric_families

    summary: dict[str, Any] = {}
    wanted: dict[str, tuple[str, Callable[[Any, Any], Any], type]] = {
        "deepyard_train_step": ("step", max, int),
        "deepyard_train_loss": ("loss", _first, float),
        "deepyard_job_attempt": ("attempt", max, int),
        "deepyard_checkpoint_saves_total": ("checkpointsSaved", max, int),
        "deepyard_checkpoint_last_step": ("lastCheckpointStep", max, int),
    }
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name not in wanted:
                continue
            key, pick, cast = wanted[sample.name]
            value = cast(sample.value)
            summary[key] = pick(summary[key], value) if key in summary else value
    return summary


def _first(a: Any, b: Any) -> Any:
    return a


def metrics_status(summary: dict[str, Any]) -> dict[str, Any]:
    """A metrics summary → the status patch: `lastCheckpointStep` (a printer column) at the
    top, the rest under `metrics`."""
    patch: dict[str, Any] = {k: v for k, v in summary.items() if k in STATUS_FIELDS}
    rest = {k: v for k, v in summary.items() if k not in STATUS_FIELDS}
    if rest:
        patch["metrics"] = rest
    return patch


DONE = ("finished", "stopped early", "failed", "not run")  # sweep trial states that ended


def summarize_sweep(text: str) -> dict[str, Any]:
    """The sweep driver's exposition (deepyard.sweep.metrics) → `.status.metrics` of a
    Sweep: trials running, done and failed, and the best value of the sweep's metric."""
    from prometheus_client.parser import text_string_to_metric_families

    counts: dict[str, int] = {}
    summary: dict[str, Any] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "deepyard_sweep_trials":
                state = sample.labels["state"]
                counts[state] = counts.get(state, 0) + int(sample.value)
            elif sample.name == "deepyard_sweep_best_metric":
                summary |= {"bestMetric": float(sample.value), "metric": sample.labels["metric"]}
    if counts:
        summary |= {
            "trialsRunning": counts.get("running", 0),
            "trialsDone": sum(counts.get(state, 0) for state in DONE),
            "trialsFailed": counts.get("failed", 0),
        }
    return summary
