"""Job specs: the one place user input is validated (pydantic, extra keys forbidden).

Data flow: job.yaml → `load()` → JobSpec → cli → launch → train.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from deepyard.spec.job import (
    CheckpointSpec,
    DataSpec,
    JobSpec,
    ModelSpec,
    OptimizerSpec,
    ParallelismSpec,
    ResourcesSpec,
    TrainingSpec,
)
from deepyard.spec.load import apply_overrides, load, load_text, validate
from deepyard.spec.recovery import FailureSpec, FaultSpec, KeepBestSpec
from deepyard.spec.telemetry import TelemetrySpec

__all__ = [
    "CheckpointSpec",
    "DataSpec",
    "FailureSpec",
    "FaultSpec",
    "JobSpec",
    "KeepBestSpec",
    "ModelSpec",
    "OptimizerSpec",
    "ParallelismSpec",
    "ResourcesSpec",
    "TelemetrySpec",
    "TrainingSpec",
    "apply_overrides",
    "json_schema",
    "load",
    "load_text",
    "spec_hash",
    "validate",
]


def json_schema() -> dict[str, Any]:
    """JSON Schema of the job spec (the source later CRDs are generated from)."""
    return JobSpec.model_json_schema()


def spec_hash(spec: JobSpec) -> str:
    """A short, stable hash of the resolved spec; goes into run records and labels."""
    canonical = json.dumps(spec.model_dump(mode="json"), sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]
