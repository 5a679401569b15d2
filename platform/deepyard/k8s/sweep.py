"""The Sweep resource: a sweep spec (base job inline) plus `kubernetes:` placement, and the
RayJob that runs `deepyard sweep run` on a RayCluster with room for the concurrent trials.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError, model_validator

from deepyard.errors import SpecError
from deepyard.k8s import SWEEP, kueue
from deepyard.k8s.placement import KubernetesSpec, is_remote_uri, k8s_name_problem, option_of
from deepyard.k8s.rayjob import (
    METRICS_PORT,
    Owner,
    Run,
    cluster_job,
    config_map,
    labels,
    rayjob,
)
from deepyard.spec import spec_hash
from deepyard.spec.sweep import SweepSpec

SWEEP_FILE = "sweep.yaml"
SWEEP_ENTRYPOINT = (
    f"python -m deepyard.cli.main sweep run /etc/deepyard/{SWEEP_FILE} --address auto"
)
# The driver serves the sweep's /metrics (and its trials') on the head pod's job-metrics port.
SWEEP_METRICS = f" --metrics-address 0.0.0.0 --metrics-port {METRICS_PORT}"


class SweepJobSpec(SweepSpec):
    """A Sweep's `.spec`: a sweep spec whose `job` is inline, plus `kubernetes:` placement."""

    kubernetes: KubernetesSpec = Field(
        default_factory=KubernetesSpec, description="Placement on Kubernetes."
    )

    @model_validator(mode="after")
    def _fits_kubernetes(self) -> SweepJobSpec:
        problem = k8s_name_problem(self.name)
        if problem:
            raise ValueError(problem)
        uri = self.job.checkpoint.uri
        if self.job.checkpoint.enabled and not is_remote_uri(uri):
            raise ValueError(
                f"job.checkpoint.uri={uri!r} is a local path, which a pod loses when it "
                "restarts; on Kubernetes set it to object storage (s3://bucket/prefix, gs://...)"
            )
        return self

    def sweep(self) -> SweepSpec:
        raw = self.model_dump(mode="json", exclude_unset=True, by_alias=True)
        raw.pop("kubernetes", None)
        raw.pop("job_overrides", None)  # already applied to the inline job
        return SweepSpec.model_validate(raw)


def load_sweep_resource(
    path: str | Path, overrides: Sequence[str] = (), placement: dict[str, Any] | None = None
) -> tuple[SweepJobSpec, dict[str, Any]]:
    """A sweep.yaml (job by path or inline) or a Sweep manifest → its spec and metadata."""
    from deepyard.spec.sweep_load import load_sweep_text

    path = Path(path)
    if not path.is_file():
        raise SpecError(f"{path}: no such file; pass a sweep spec or Sweep YAML file")
    raw = yaml.safe_load(path.read_text()) or {}
    metadata: dict[str, Any] = {}
    kubernetes = dict(placement or {})
    if isinstance(raw, dict) and raw.get("kind") == SWEEP:
        metadata = dict(raw.get("metadata") or {})
        raw = dict(raw.get("spec") or {})
    if isinstance(raw, dict):
        kubernetes = {**(raw.pop("kubernetes", None) or {}), **kubernetes}
    # The sweep's own loader resolves the job file and words every problem as the CLI does.
    sweep = load_sweep_text(yaml.safe_dump(raw), str(path), overrides, base_dir=path.parent)
    resolved = sweep.model_dump(mode="json", exclude_unset=True, by_alias=True)
    resolved["job"] = sweep.job.model_dump(mode="json", exclude_unset=True, by_alias=True)
    resolved.pop("job_overrides", None)
    resolved["kubernetes"] = kubernetes
    try:
        return SweepJobSpec.model_validate(resolved), metadata
    except ValidationError as exc:
        raise SpecError([_problem(e, list(placement or {})) for e in exc.errors()]) from None


def _problem(error: Any, options: list[str]) -> str:
    message = str(error["msg"]).removeprefix("Value error, ")
    option = option_of(error["loc"], options)
    field = ".".join(str(p) for p in error["loc"])
    return f"{option}: {field}: {message}" if option else message


def build_sweep(
    spec: SweepJobSpec,
    owner: Owner,
    image: str | None = None,
    classes: Sequence[kueue.WorkloadClass] = (),
) -> list[dict]:
    """The ConfigMap (sweep.yaml, job inline) and the RayJob for one Sweep."""
    sweep = spec.sweep()
    job = cluster_job(sweep.job, fixed_port=False)
    text = yaml.safe_dump(
        {**sweep.model_dump(mode="json", exclude_unset=True, by_alias=True), "job": _dump(job)},
        sort_keys=False,
    )
    header = f"# made by deepyard-operator for Sweep {owner.name}, spec hash {spec_hash(sweep)}\n"
    config = config_map(owner, labels(job, owner), SWEEP_FILE, header + text)
    gangs = sweep.budget.max_concurrent or 1
    entrypoint = SWEEP_ENTRYPOINT + (SWEEP_METRICS if job.telemetry.metrics else "")
    run = Run(entrypoint, config["metadata"]["name"], gangs)
    return [config, rayjob(spec.kubernetes, job, owner, run, image, classes)]


def _dump(job: Any) -> dict[str, Any]:
    return dict(job.model_dump(mode="json", exclude_unset=True, by_alias=True))
