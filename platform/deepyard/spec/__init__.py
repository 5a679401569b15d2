"""Job specs: the one place user input is validated (pydantic, extra keys forbidden).

Data flow: job.yaml → `load()` → JobSpec → cli → launch → train.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import yaml
from pydantic import BaseModel

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
    "to_yaml",
    "validate",
]


def json_schema() -> dict[str, Any]:
    """JSON Schema of the job spec (the source later CRDs are generated from)."""
    return JobSpec.model_json_schema()


def spec_hash(spec: BaseModel, exclude: set[str] | None = None) -> str:
    """A short, stable hash of a resolved spec (job or sweep; `exclude` leaves fields out);
    goes into run records, labels and sweep dirs."""
    canonical = json.dumps(spec.model_dump(mode="json", exclude=exclude), sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]


def to_yaml(spec: JobSpec, header: str) -> str:
    """A job spec as a user would write it (the fields set, by their YAML names), after a
    `# header` line: what `deepyard run` reads back unchanged."""
    fields = spec.model_dump(mode="json", exclude_unset=True, by_alias=True)
    return f"# {header}\n" + yaml.safe_dump(fields, sort_keys=False)
