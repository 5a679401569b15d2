"""The spec sections for surviving failures: checkpoint, failure and faults.

`checkpoint` says where and how often state is saved; `failure` how many times a job
restarts itself and when a silent worker counts as hung; `faults` injects crashes,
hangs and preemptions at chosen steps, for chaos tests by users and by our own tests.
"""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field, PositiveFloat, PositiveInt, model_validator

from deepyard.spec.base import SpecModel as _Spec
from deepyard.tasks.catalog import all_metrics

EVAL_METRICS = tuple(all_metrics())  # of every task; JobSpec checks the model's own


class KeepBestSpec(_Spec):
    """Also keep the k checkpoints with the best value of an eval metric."""

    metric: str = Field(description=f"An eval metric: {', '.join(EVAL_METRICS)}.")
    mode: Literal["min", "max"] = Field(description="Whether lower or higher is better.")
    k: PositiveInt = Field(default=1, description="How many of the best to keep.")

    @model_validator(mode="after")
    def _known_metric(self) -> KeepBestSpec:
        if self.metric not in EVAL_METRICS:
            raise ValueError(
                f"checkpoint.keep_best.metric={self.metric!r} is not an eval metric; "
                f"use one of: {', '.join(EVAL_METRICS)}"
            )
        return self


class CheckpointSpec(_Spec):
    """Where and how often to checkpoint. Off unless every_steps or every_minutes is set."""

    model_config = ConfigDict(populate_by_name=True, serialize_by_alias=True)  # `async`

    uri: str | None = Field(
        default=None,
        description="A local path, file://… or s3://bucket/prefix (any pyarrow.fs URI); "
        "default: <output_dir>/<name>/checkpoints.",
    )
    every_steps: PositiveInt | None = Field(default=None, description="Save every N steps.")
    every_minutes: PositiveFloat | None = Field(
        default=None, description="Save when this many minutes passed since the last save."
    )
    keep_last: PositiveInt = Field(default=3, description="Newest checkpoints kept.")
    keep_best: KeepBestSpec | None = Field(
        default=None, description="Also keep the best checkpoints by an eval metric."
    )
    async_save: bool = Field(
        default=True,
        alias="async",
        description="Write in the background; training blocks only to copy state to host memory.",
    )

    @property
    def enabled(self) -> bool:
        return self.every_steps is not None or self.every_minutes is not None

    @model_validator(mode="after")
    def _has_interval(self) -> CheckpointSpec:
        aliases = {"async_save": "async"}
        configured = sorted(
            aliases.get(name, name)
            for name in self.model_fields_set - {"every_steps", "every_minutes"}
        )
        if configured and not self.enabled:
            raise ValueError(
                f"checkpoint.{configured[0]} is set but no interval is: set "
                "checkpoint.every_steps or checkpoint.every_minutes (or remove the block)"
            )
        return self


class FailureSpec(_Spec):
    """How the job recovers by itself: restarts from the newest checkpoint."""

    max_restarts: int = Field(
        default=0,
        ge=0,
        description="Restarts after a worker dies, hangs or fails; each resumes from the "
        "newest valid checkpoint.",
    )
    hang_timeout_s: PositiveFloat | None = Field(
        default=600.0,
        description="Seconds without step progress (after the first step) before the "
        "attempt counts as hung: every rank's stack is dumped and the attempt is failed. "
        "null: never.",
    )
    lost_node_wait_s: float = Field(
        default=120.0,
        ge=0,
        description="After a node that held workers is lost, how long a restart waits for "
        "the cluster to have room for the whole gang again (a replacement node) before "
        "failing with the lost node's name. Where the gang fits the nodes left, it restarts "
        "on them at once.",
    )


class FaultSpec(_Spec):
    """One injected fault: `kind` happens on `rank` just before it runs `step`."""

    kind: Literal["crash", "hang", "sigterm", "error"] = Field(
        description="crash: the worker process is SIGKILLed; hang: it stops making "
        "progress; sigterm: the job gets SIGTERM, as on preemption; error: it raises."
    )
    step: PositiveInt = Field(description="The optimizer step (1-based) it happens before.")
    rank: int = Field(default=0, ge=0, description="The worker rank it happens on.")
    attempt: PositiveInt = Field(
        default=1, description="The attempt it happens in (1: the first run, before restarts)."
    )
