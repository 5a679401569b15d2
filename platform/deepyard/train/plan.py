"""What the driver tells each worker about this attempt: its number, where checkpoints
go and which one to resume from. Plain data: it crosses to Ray workers by pickle."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from deepyard.checkpoint.manifest import Checkpoint


@dataclass(frozen=True)
class AttemptPlan:
    attempt: int = 1
    nonce: str = "local"  # unique per attempt: tells this attempt's saves from stale ones
    checkpoint_uri: str | None = None
    lineage: str | None = None
    resume: Checkpoint | None = None
    job_pid: int = field(default_factory=os.getpid)  # receives SIGTERM faults
    hold_after_eval: bool = False  # a PBT trial: wait for the driver after each evaluation
