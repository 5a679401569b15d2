"""The TrainJob spec: the job spec users run locally plus a `kubernetes:` placement section.

A TrainJob's `.spec` is exactly a job.yaml with one more key, so the same file trains on a
laptop (`deepyard run`, without the `kubernetes:` key) and on a cluster. Validation is the
job spec's own (same messages), plus the rules that only matter on Kubernetes.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from deepyard.errors import SpecError
from deepyard.spec.base import SpecModel
from deepyard.spec.job import JobSpec

QUANTITY = r"^[0-9]+(\.[0-9]+)?(m|k|Ki|M|Mi|G|Gi|T|Ti|P|Pi|E|Ei)?$"
DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
MAX_NAME = 47  # KubeRay derives RayCluster and Service names from the RayJob's name


class TolerationSpec(SpecModel):
    """A pod toleration (core/v1 Toleration), so workers may run on tainted GPU nodes."""

    key: str | None = Field(default=None, description="The taint key; none: every taint.")
    operator: Literal["Exists", "Equal"] = Field(default="Equal", description="Exists or Equal.")
    value: str | None = Field(default=None, description="The taint value (operator Equal).")
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(
        default=None, description="The taint effect tolerated; none: every effect."
    )
    toleration_seconds: int | None = Field(
        default=None, ge=0, description="NoExecute only: how long the pod stays after the taint."
    )

    def manifest(self) -> dict[str, Any]:
        names = {"toleration_seconds": "tolerationSeconds"}
        return {names.get(k, k): v for k, v in self.model_dump().items() if v is not None}


class KubernetesSpec(SpecModel):
    """Where and how a job runs on Kubernetes (KubeRay RayJob, optionally queued by Kueue)."""

    image: str | None = Field(
        default=None,
        description="Container image with deepyard installed, for the head and the workers "
        "(default: the operator's jobs.image from the Helm chart).",
    )
    namespace: str | None = Field(
        default=None,
        pattern=DNS_LABEL,
        description="Namespace of the TrainJob and everything made for it (default: the "
        "current context's).",
    )
    queue_name: str | None = Field(
        default=None,
        description="Kueue LocalQueue: the RayJob is created suspended with the "
        "kueue.x-k8s.io/queue-name label and starts when Kueue admits it.",
    )
    priority_class: str | None = Field(
        default=None,
        description="PriorityClass of the pods (scheduling and pod preemption). Kueue orders "
        "queued jobs by it only when no WorkloadPriorityClass applies.",
    )
    workload_priority_class: str | None = Field(
        default=None,
        description="Kueue WorkloadPriorityClass of the queued RayJob (label "
        "kueue.x-k8s.io/priority-class); default: the one the operator maps the spec's "
        "priority to (chart values kueue.workloadPriorityClasses).",
    )
    node_selector: dict[str, str] = Field(
        default_factory=dict, description="Node labels the worker and head pods require."
    )
    tolerations: list[TolerationSpec] = Field(
        default_factory=list, description="Taints the pods tolerate (e.g. GPU nodes)."
    )
    service_account: str | None = Field(
        default=None, description="Service account of the pods (e.g. for workload identity)."
    )
    checkpoint_secret: str | None = Field(
        default=None,
        description="A Secret whose keys become environment variables of every pod, e.g. "
        "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY for an s3:// checkpoint.uri.",
    )
    memory_per_worker: str = Field(
        default="4Gi", pattern=QUANTITY, description="Memory request and limit of a worker."
    )
    shm_size: str = Field(
        default="1Gi",
        pattern=QUANTITY,
        description="Size of the in-memory /dev/shm volume (data loaders, NCCL).",
    )
    head_cpu: str = Field(default="1", pattern=QUANTITY, description="CPU of the Ray head pod.")
    head_memory: str = Field(
        default="4Gi", pattern=QUANTITY, description="Memory of the Ray head pod."
    )
    ttl_seconds_after_finished: int = Field(
        default=300,
        ge=0,
        description="Seconds the finished RayCluster is kept (for logs) before KubeRay deletes it.",
    )
    active_deadline_s: int | None = Field(
        default=None, gt=0, description="Fail the job after this many seconds running."
    )

    @field_validator(
        "queue_name",
        "priority_class",
        "workload_priority_class",
        "service_account",
        "checkpoint_secret",
    )
    @classmethod
    def _object_name(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?", value):
            raise ValueError(
                f"{value!r} is not a Kubernetes object name; use lower-case letters, "
                "digits, '-' and '.'"
            )
        return value


def k8s_name_problem(name: str) -> str | None:
    """Why a job name cannot name Kubernetes objects (None when it can); the CRD's CEL
    rule gives the same message."""
    if "_" in name or len(name) > MAX_NAME:
        return (
            f"name='{name}' cannot name Kubernetes objects; use lower-case letters, digits, "
            f"'-' and '.', at most {MAX_NAME} characters (KubeRay's limit)"
        )
    return None


class TrainJobSpec(JobSpec):
    """A TrainJob's `.spec`: a job spec plus `kubernetes:` placement."""

    kubernetes: KubernetesSpec = Field(
        default_factory=KubernetesSpec, description="Placement on Kubernetes."
    )

    @model_validator(mode="after")
    def _fits_kubernetes(self) -> TrainJobSpec:
        problem = k8s_name_problem(self.name)
        if problem:
            raise ValueError(problem)
        uri = self.checkpoint.uri
        if self.checkpoint.enabled and not is_remote_uri(uri):
            raise ValueError(
                f"checkpoint.uri={uri!r} is a local path, which a pod loses when it restarts; "
                "on Kubernetes set checkpoint.uri to object storage (s3://bucket/prefix, "
                "gs://...) and kubernetes.checkpoint_secret to its credentials"
            )
        return self

    def job(self) -> JobSpec:
        """The plain job spec (what `deepyard run` reads on the cluster)."""
        raw = self.model_dump(mode="json", exclude_unset=True, by_alias=True)
        raw.pop("kubernetes", None)
        return JobSpec.model_validate(raw)


def is_remote_uri(uri: str | None) -> bool:
    return bool(uri and re.match(r"^[a-z][a-z0-9+.-]*://", uri) and not uri.startswith("file:"))


# The command-line options that set `kubernetes:` keys (deepyard k8s render|submit, deepyard
# submit --k8s); a problem with a value they gave names the option, not the file.
OPTIONS = {
    "image": "--image",
    "namespace": "--namespace",
    "queue_name": "--queue",
    "priority_class": "--priority-class",
    "workload_priority_class": "--workload-priority-class",
}


def validate_trainjob(
    raw: dict[str, Any],
    source: str = "<TrainJob>",
    set_paths: Sequence[tuple] = (),
    options: Sequence[str] = (),
) -> TrainJobSpec:
    """A TrainJob spec, or one SpecError listing every problem as the CLI words it
    (`options`: the `kubernetes:` keys a command-line option set)."""
    from deepyard.spec.load import _describe

    try:
        return TrainJobSpec.model_validate(raw)
    except ValidationError as exc:
        problems = [
            _describe(e, option_of(e["loc"], options) or source, None, set(set_paths))
            for e in exc.errors()
        ]
        raise SpecError(problems, source) from None


def option_of(loc: Sequence[Any], options: Sequence[str]) -> str | None:
    """The option that set the field at `loc` (None: the file set it)."""
    if len(loc) >= 2 and loc[0] == "kubernetes" and loc[1] in options:
        return OPTIONS[str(loc[1])]
    return None


def load_trainjob(
    path: str | Path, overrides: Sequence[str] = (), placement: dict[str, Any] | None = None
) -> tuple[TrainJobSpec, dict[str, Any]]:
    """A job.yaml or a TrainJob manifest (kind: TrainJob) → its spec and the manifest's
    metadata (labels, annotations kept), with `--set` overrides and placement options."""
    from deepyard.spec.load import apply_overrides, read_yaml

    path = Path(path)
    if not path.is_file():
        raise SpecError(f"{path}: no such file; pass a job spec or TrainJob YAML file")
    raw, _ = read_yaml(path.read_text(), str(path))
    if not isinstance(raw, dict):
        raise SpecError(f"{path}: a job spec is a mapping of keys (name, model, data, ...)")
    metadata: dict[str, Any] = {}
    if raw.get("kind") == "TrainJob":
        metadata = dict(raw.get("metadata") or {})
        raw = dict(raw.get("spec") or {})
    if placement:
        raw["kubernetes"] = {**(raw.get("kubernetes") or {}), **placement}
    set_paths = apply_overrides(raw, overrides, str(path))
    return validate_trainjob(raw, str(path), set_paths, list(placement or {})), metadata
