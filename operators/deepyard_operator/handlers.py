"""kopf handlers. Every decision is a pure function of `deepyard.k8s`; these only act.

- TrainJob/Sweep created (or found on start-up) → validate the spec with the same pydantic
  models as the CLI → create the ConfigMap and the RayJob (owned by the resource, so the
  API server's garbage collector deletes them with it) → status Queued/Starting.
- RayJob changed → the owner's status: phase, conditions, attempts, reason.
- Every `jobs.metricsIntervalSeconds` while Running → the driver's /metrics → status.metrics
  (a TrainJob's step, loss... and lastCheckpointStep; a Sweep's trial counts and best metric).
- TrainJob/Sweep deleted → its RayJob and ConfigMap are deleted at once (and by the
  garbage collector through the owner references, should the operator be down).
"""

from __future__ import annotations

import logging
import os
import urllib.request
from typing import Any

import kopf

from deepyard.errors import SpecError
from deepyard.k8s import API_VERSION, GROUP, SWEEP, TRAINJOB, VERSION, kueue, render
from deepyard.k8s import status as job_status
from deepyard.k8s.client import Cluster
from deepyard.k8s.rayjob import LABEL_JOB, METRICS_PORT

KINDS = {"trainjobs": TRAINJOB, "sweeps": SWEEP}
Log = logging.Logger | logging.LoggerAdapter[Any]
METRICS_INTERVAL_S = float(os.environ.get("DEEPYARD_METRICS_INTERVAL_S", "30"))
_cluster: Cluster | None = None


def cluster() -> Cluster:
    global _cluster
    if _cluster is None:
        _cluster = Cluster()
    return _cluster


def fetch_metrics(url: str) -> str:
    """The driver's Prometheus exposition (the operator's one HTTP call that is not the API)."""
    with urllib.request.urlopen(url, timeout=5) as response:
        return str(response.read().decode())


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    settings.persistence.finalizer = f"{GROUP}/operator"
    # Serve exactly the namespaces given (--namespace) and the CRDs installed before start:
    # no cluster-wide listing of namespaces or CRDs, so the RBAC stays namespaced.
    settings.scanning.disabled = True
    settings.posting.level = logging.WARNING
    settings.watching.server_timeout = 300


def _manifest(kind: str, body: kopf.Body) -> dict[str, Any]:
    meta = body["metadata"]
    return {
        "apiVersion": API_VERSION,
        "kind": kind,
        "metadata": {"name": meta["name"], "namespace": meta["namespace"]},
        "spec": dict(body["spec"]),
    }


@kopf.on.resume(GROUP, VERSION, "trainjobs")
@kopf.on.create(GROUP, VERSION, "trainjobs")
@kopf.on.resume(GROUP, VERSION, "sweeps")
@kopf.on.create(GROUP, VERSION, "sweeps")
def create(body: kopf.Body, uid: str, patch: kopf.Patch, logger: Log, **kwargs: Any) -> None:
    """Make the ConfigMap and the RayJob (idempotent: what exists is kept)."""
    kind = KINDS[kwargs["resource"].plural]
    if body.get("status", {}).get("phase") in ("Succeeded", "Failed"):
        return  # finished before the operator restarted: nothing to start again
    image = os.environ.get("DEEPYARD_JOB_IMAGE") or None
    classes = kueue.classes_from_env()  # the chart's values: wrong ones fail here, retried
    try:
        objects = render.generated(_manifest(kind, body), uid, image, classes)
    except SpecError as exc:
        message = "; ".join(exc.problems)
        patch.status.update(phase="Failed", reason="InvalidSpec", message=message)
        kopf.warn(body, reason="InvalidSpec", message=message)
        logger.error(f"invalid {kind} spec: {message}")
        return
    live = [cluster().create(obj) for obj in objects]  # an existing one comes back as it is
    rayjob = live[-1]
    patch.status.update(job_status.from_rayjob(rayjob, body.get("status")))
    logger.info(f"{kind} → RayJob {rayjob['metadata']['name']} ({patch.status['phase']})")


@kopf.on.update(GROUP, VERSION, "trainjobs", field="spec")
@kopf.on.update(GROUP, VERSION, "sweeps", field="spec")
def spec_changed(body: kopf.Body, **_: Any) -> None:
    """A running job keeps the spec it started with (as a RayJob does): say so, loudly.
    The CRDs refuse such edits (rules.IMMUTABLE); this covers clusters with older CRDs."""
    kopf.warn(
        body,
        reason="SpecChangeIgnored",
        message="a TrainJob's spec is fixed once it runs; delete it and apply the new spec "
        "(with checkpointing on, the new job resumes from the last checkpoint)",
    )


@kopf.on.delete(GROUP, VERSION, "trainjobs")
@kopf.on.delete(GROUP, VERSION, "sweeps")
def delete(name: str, namespace: str | None, logger: Log, **_: Any) -> None:
    """Delete the RayJob (KubeRay deletes its RayCluster) and the ConfigMap now."""
    assert namespace is not None  # both kinds are namespaced
    gone = cluster().delete("ray.io/v1", "RayJob", name, namespace)
    cluster().delete("v1", "ConfigMap", f"{name}-spec", namespace)
    logger.info(f"deleted RayJob {name}" if gone else f"RayJob {name} was already gone")


@kopf.on.event("ray.io", "v1", "rayjobs", labels={LABEL_JOB: kopf.PRESENT})
def rayjob_changed(body: kopf.Body, type: str, namespace: str | None, **_: Any) -> None:
    """Mirror a RayJob's status into the TrainJob or Sweep that owns it."""
    assert namespace is not None
    owner = next(
        (
            ref
            for ref in body.get("metadata", {}).get("ownerReferences", [])
            if ref.get("apiVersion") == API_VERSION and ref.get("kind") in (TRAINJOB, SWEEP)
        ),
        None,
    )
    if owner is None or type == "DELETED" or type is None:
        return
    api = cluster()
    try:
        current = api.get(API_VERSION, owner["kind"], owner["name"], namespace)
    except Exception:
        return  # the owner is being deleted
    previous = current.get("status") or {}
    patch = job_status.from_rayjob(dict(body), previous)
    if {k: previous.get(k) for k in patch} != patch:
        api.patch_status(API_VERSION, owner["kind"], owner["name"], namespace, patch)


def _running(status: kopf.Status, **_: Any) -> bool:
    return bool(status.get("phase") == "Running" and status.get("rayClusterName"))


def _driver_metrics(status: kopf.Status, namespace: str | None) -> str:
    head = f"{status['rayClusterName']}-head-svc.{namespace}.svc"
    try:
        return fetch_metrics(f"http://{head}:{METRICS_PORT}/metrics")
    except OSError as exc:
        raise kopf.TemporaryError(f"cannot read the job's metrics yet: {exc}", delay=60) from None


@kopf.timer(GROUP, VERSION, "trainjobs", interval=METRICS_INTERVAL_S, when=_running)
def metrics(status: kopf.Status, namespace: str | None, patch: kopf.Patch, **_: Any) -> None:
    """The driver's newest step, loss, attempt and checkpoint count into status.metrics,
    and the newest checkpoint's step into status.lastCheckpointStep."""
    summary = job_status.summarize_metrics(_driver_metrics(status, namespace))
    patch.status.update(job_status.metrics_status(summary))


@kopf.timer(GROUP, VERSION, "sweeps", interval=METRICS_INTERVAL_S, when=_running)
def sweep_metrics(status: kopf.Status, namespace: str | None, patch: kopf.Patch, **_: Any) -> None:
    """The sweep driver's trials running/done/failed and best metric into status.metrics."""
    summary = job_status.summarize_sweep(_driver_metrics(status, namespace))
    if summary:
        patch.status["metrics"] = summary
