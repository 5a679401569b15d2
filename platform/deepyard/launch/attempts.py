"""Attempts of one job: which checkpoint each resumes from, whether to try again, and the
record of every recovery (what failed, how long detection, restore and the way back to
the first step took, and how many steps were redone).

`FailurePolicy.decide()` is the one place that says whether a failed attempt is retried
(Ray Train's FailureConfig, as a decision a controller acts on).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from deepyard import spec as specs
from deepyard.checkpoint import catalog, relayout
from deepyard.checkpoint.store import Store
from deepyard.errors import CheckpointError, ClusterShrunk, DataError, DeepyardError, SpecError
from deepyard.models import registry
from deepyard.spec import JobSpec
from deepyard.train.plan import AttemptPlan
from deepyard.train.topology import Layout

Warn = Callable[[str], None]
# The user must act on these; a restart would fail the same way.
PERMANENT = (SpecError, DataError, CheckpointError, ClusterShrunk)


@dataclass(frozen=True)
class FailurePolicy:
    max_restarts: int

    def decide(self, error: BaseException, attempt: int) -> bool:
        """Whether to start attempt `attempt + 1` after `error` ended attempt `attempt`."""
        if isinstance(error, PERMANENT) or not isinstance(error, DeepyardError):
            return False
        return attempt <= self.max_restarts


def failure_cause(error: BaseException) -> str:
    """A short label for metrics: worker_lost, hang, checkpoint, training, ..."""
    names = {
        "WorkerLost": "worker_lost",
        "WorkerHung": "hang",
        "CheckpointError": "checkpoint",
        "TrainingError": "training",
        "ClusterShrunk": "cluster_shrunk",
    }
    return names.get(type(error).__name__, type(error).__name__.lower())


def open_lineage(spec: JobSpec, restart: bool) -> str | None:
    """The checkpoint lineage this run continues (or starts); None without checkpointing."""
    uri = spec.checkpoint_uri
    if uri is None:
        return None
    lineage, _ = catalog.open_lineage(Store.open(uri), spec.name, specs.spec_hash(spec), restart)
    return lineage


def plan_attempt(
    spec: JobSpec, attempt: int, lineage: str | None, run_id: str, warn: Warn, job_pid: int
) -> AttemptPlan:
    """The plan of the next attempt: resume from the newest checkpoint that verifies."""
    nonce = f"{run_id}-a{attempt}"
    uri = spec.checkpoint_uri
    if uri is None or lineage is None:
        return AttemptPlan(attempt, nonce, job_pid=job_pid)
    resume = catalog.newest_valid(Store.open(uri), lineage, warn)
    if resume is not None:
        _check_resumable(spec, resume.manifest or {}, f"{uri}/{resume.prefix}")
    return AttemptPlan(attempt, nonce, uri, lineage, resume, job_pid)


# How the ranks split the work: a checkpoint may move between these (see _check_layout).
# (pipeline_partition is not one: the same stage count cut elsewhere would load each
# stage's optimizer partition onto other layers.)
LAYOUT_FIELDS = ("data", "pipeline", "tensor")


def _check_resumable(spec: JobSpec, manifest: dict[str, Any], where: str) -> None:
    """The checkpoint must come from the same model and ZeRO settings, or it cannot load;
    the layout may change where the checkpoint can move (`_check_layout`)."""
    saved = dict(manifest.get("spec", {}))
    mine = spec.model_dump(mode="json")
    saved["parallelism"] = _without_layout(saved.get("parallelism"))
    mine["parallelism"] = _without_layout(mine["parallelism"])
    for field_name in ("model", "parallelism"):
        if saved.get(field_name) != mine[field_name]:
            raise CheckpointError(
                f"{where} was saved with {field_name}={saved.get(field_name)}, but the spec "
                f"now has {field_name}={mine[field_name]}; resume with the same {field_name}, "
                "or pass --restart to start a new checkpoint lineage (the old one is kept)"
            )
    relayout.check_layers(manifest, registry.pipeline_layers(spec.model.name, spec.model.args))
    _check_layout(spec, manifest)


def _without_layout(parallelism: dict[str, Any] | None) -> dict[str, Any] | None:
    if parallelism is None:
        return None
    return {k: v for k, v in parallelism.items() if k not in LAYOUT_FIELDS}


def _check_layout(spec: JobSpec, manifest: dict[str, Any]) -> None:
    """Data parallelism alone moves to any world size. A model cut into pipeline stages or
    tensor slices moves to another data x pipeline x tensor layout through DeepSpeed's
    universal format, which needs the optimizer state in ZeRO partitions (stage 1 or 2;
    AutoTP records how each weight was sliced, `relayout` renames pipeline layers). Under
    ZeRO stage 0 tensor slices move between data x tensor layouts (each tensor rank's
    file holds its slices' whole optimizer state: `tensor_slices` cuts it anew), and
    pipeline stages do not move."""
    saved, now = relayout.saved_layout(manifest), Layout.of(spec)
    if saved == now or max(saved.pipeline, saved.tensor, now.pipeline, now.tensor) == 1:
        return
    if min(saved.pipeline, saved.tensor) > 1 or min(now.pipeline, now.tensor) > 1:
        raise CheckpointError(
            f"the checkpoint at step {manifest.get('step')} was saved with parallelism "
            f"{_layout(saved)}, and this run asks for {_layout(now)}; a model cut into "
            "pipeline stages and tensor slices together resumes only on the layout it was "
            "saved with (its stages' slices carry no slicing record for DeepSpeed's "
            f"universal format): set parallelism and resources.num_workers back to "
            f"{_layout(saved)}, or start over with --restart"
        )
    if spec.parallelism.zero_stage != 0 or saved.pipeline == now.pipeline == 1:
        return
    why = (
        "each pipeline stage keeps its optimizer state by position, which does not move "
        "to another layout"
        if saved.pipeline > 1
        else "pipeline stages take their optimizer state from ZeRO partitions, which "
        "this checkpoint does not have"
    )
    raise CheckpointError(
        f"the checkpoint at step {manifest.get('step')} was saved with parallelism "
        f"{_layout(saved)}, and this run asks for {_layout(now)}; with zero_stage 0 {why} "
        "(runs with zero_stage 1 do): set parallelism and resources.num_workers back to "
        f"{_layout(saved)}, or start over with --restart"
    )


def _layout(layout: Layout) -> str:
    return f"data {layout.data} x pipeline {layout.pipeline} x tensor {layout.tensor}"


@dataclass
class Attempts:
    """Watches the events of each attempt and keeps the recovery record."""

    attempt: int = 1
    last_step: int = 0
    last_progress_t: float = field(default_factory=time.time)
    recoveries: list[dict[str, Any]] = field(default_factory=list)
    _open: dict[str, Any] | None = None

    def observe(self, event: dict[str, Any]) -> dict[str, Any] | None:
        """Track one event; returns the recovery record it completes, if it does."""
        kind = event.get("type")
        now = event.get("t", time.time())
        if kind == "rank_step":  # a dying rank 0 leaves its last steps unsent
            self.last_step = max(self.last_step, event["step"])
            # ... and may die before its first step of a new attempt is sent: any rank's
            # first step completes the recovery.
            return None if self._open is None else self._recovered(now)
        self.last_progress_t = now
        if kind == "step":
            self.last_step = max(self.last_step, event["step"])
        if self._open is None:
            return None
        if kind == "resumed":
            self._open["resumed_step"] = event["step"]
            self._open["restore_s"] = event["restore_s"]
        elif kind == "step":
            return self._recovered(now)
        return None

    def _recovered(self, first_step_t: float) -> dict[str, Any]:
        assert self._open is not None
        resumed = self._open.get("resumed_step", 0)
        self._open["steps_redone"] = max(0, self._open.pop("failed_step") - resumed)
        self._open["first_step_s"] = round(first_step_t - self._open.pop("failed_t"), 3)
        self._open["resumed_step"] = resumed
        record, self._open = self._open, None
        self.recoveries.append(record)
        return record

    def failed(self, error: BaseException) -> None:
        """Attempt `attempt` failed now; the next one starts."""
        now = time.time()
        self._open = {
            "attempt": self.attempt + 1,
            "cause": str(error).splitlines()[0],
            "failed_step": self.last_step,
            "failed_t": now,
            "detect_s": round(now - self.last_progress_t, 3),
        }
        self.attempt += 1
        self.last_step = 0  # the next attempt counts from its resumed step

    def summary(self) -> dict[str, Any]:
        return {"attempts": self.attempt, "recoveries": self.recoveries}
