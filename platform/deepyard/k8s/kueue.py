"""Kueue: the labels that queue a RayJob, and the WorkloadPriorityClass a job's `priority`
maps to.

Kueue orders the workloads waiting in a ClusterQueue by priority. A job names its
WorkloadPriorityClass (a cluster-scoped `kueue.x-k8s.io` object holding a `value`) with the
label `kueue.x-k8s.io/priority-class`; without the label Kueue falls back to the pods'
PriorityClass. The chart can install a set of WorkloadPriorityClasses (values
`kueue.workloadPriorityClasses`) and hands the same list to the operator in
`DEEPYARD_KUEUE_PRIORITY_CLASSES`; a queued job then gets the class whose `minPriority` is
the highest not above its spec's `priority` (-1000..1000), so `priority: 600` can overtake
jobs queued at the default 0. `kubernetes.workload_priority_class` names a class outright,
and a job that sets only `kubernetes.priority_class` keeps Kueue's fallback to it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

from pydantic import Field, TypeAdapter, ValidationError

from deepyard.errors import DeepyardError
from deepyard.spec.base import SpecModel

QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
PRIORITY_LABEL = "kueue.x-k8s.io/priority-class"
CLASSES_ENV = "DEEPYARD_KUEUE_PRIORITY_CLASSES"
API_VERSION = "kueue.x-k8s.io/v1beta1"
KIND = "WorkloadPriorityClass"
OBJECT_NAME = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"


class WorkloadClass(SpecModel):
    """One WorkloadPriorityClass, and the lowest job priority that maps to it."""

    name: str = Field(pattern=OBJECT_NAME, max_length=253, description="The object's name.")
    value: int = Field(
        ge=-(2**31), lt=2**31, description="Kueue's priority value (int32; higher goes first)."
    )
    min_priority: int = Field(
        alias="minPriority",
        ge=-1000,
        le=1000,
        description="Jobs whose spec priority is at least this (and below the next class's) "
        "get this class.",
    )
    description: str = Field(default="", description="Shown by kubectl.")


_CLASSES = TypeAdapter(list[WorkloadClass])


class ClassesError(DeepyardError):
    """The operator's (or `deepyard k8s render`'s) class list is wrong: the chart values or
    the environment variable must be fixed, not the job."""

    exit_code = 2


def parse_classes(text: str, source: str = CLASSES_ENV) -> list[WorkloadClass]:
    """The class list, as JSON (the chart's values, passed to the operator)."""
    try:
        classes = _CLASSES.validate_python(json.loads(text or "[]"))
    except (ValueError, ValidationError) as exc:
        reason = str(exc)
        if isinstance(exc, ValidationError):
            reason = "; ".join(
                "[" + "].".join(str(p) for p in e["loc"]) + f": {e['msg']}" for e in exc.errors()
            )
        raise ClassesError(
            f"{source}: not a list of WorkloadPriorityClasses ({reason}); give JSON like "
            '[{"name": "deepyard-normal", "value": 1000, "minPriority": 0}]'
        ) from None
    thresholds = [c.min_priority for c in classes]
    if len(set(thresholds)) != len(thresholds):
        raise ClassesError(
            f"{source}: two classes share a minPriority ({sorted(thresholds)}); "
            "give each class its own"
        )
    return classes


def classes_from_env() -> list[WorkloadClass]:
    return parse_classes(os.environ.get(CLASSES_ENV, ""))


def choose(priority: int, classes: Sequence[WorkloadClass]) -> str | None:
    """The class a job of `priority` gets: the highest minPriority not above it; below
    every class, the lowest class. None when no classes are configured."""
    if not classes:
        return None
    ordered = sorted(classes, key=lambda c: c.min_priority)
    chosen = ordered[0]
    for candidate in ordered:
        if candidate.min_priority <= priority:
            chosen = candidate
    return chosen.name


def labels(
    queue: str | None,
    explicit: str | None,
    pod_class: str | None,
    priority: int,
    classes: Sequence[WorkloadClass],
) -> dict[str, str]:
    """The Kueue labels of a RayJob: none without a queue (Kueue ignores it then)."""
    if queue is None:
        return {}
    found = {QUEUE_LABEL: queue}
    chosen = explicit or (None if pod_class else choose(priority, classes))
    if chosen:
        found[PRIORITY_LABEL] = chosen
    return found


def manifest(workload_class: WorkloadClass) -> dict[str, Any]:
    """The WorkloadPriorityClass object (cluster-scoped) as Kueue documents it."""
    body: dict[str, Any] = {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": workload_class.name},
        "value": workload_class.value,
    }
    if workload_class.description:
        body["description"] = workload_class.description
    return body
