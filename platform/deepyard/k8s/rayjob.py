"""TrainJob spec → the ConfigMap (the resolved job.yaml) and the KubeRay RayJob that runs it.

The RayCluster is sized from `resources`: one Ray worker pod per deepyard worker (its CPUs,
memory and `nvidia.com/gpu` limit), or one pod for the whole gang when placement is
STRICT_PACK; SPREAD/STRICT_SPREAD become pod anti-affinity. The head runs only the driver
(`num-cpus: 0`), so the gang lands on the worker pods. With a Kueue queue the RayJob is
created suspended and labelled for the queue; Kueue admits it by unsuspending it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import metadata
from typing import Any

from deepyard.errors import SpecError
from deepyard.k8s import API_VERSION, TRAINJOB, kueue
from deepyard.k8s.placement import KubernetesSpec, TrainJobSpec
from deepyard.spec import JobSpec, spec_hash, to_yaml

SPEC_DIR = "/etc/deepyard"
SPEC_FILE = "job.yaml"
ENTRYPOINT = f"python -m deepyard.cli.main run {SPEC_DIR}/{SPEC_FILE} --address auto"
METRICS_PORT = 9400  # the driver's /metrics on the head pod (the PodMonitor scrapes it)
RAY_METRICS_PORT = 8080
LABEL_JOB = "deepyard.dev/job"
LABEL_HASH = "deepyard.dev/spec-hash"
QUEUE_LABEL = kueue.QUEUE_LABEL
MANAGED_BY = {"app.kubernetes.io/managed-by": "deepyard-operator"}


@dataclass(frozen=True)
class Owner:
    """The TrainJob (or Sweep) everything is made for; without a uid (rendering without a
    cluster) no owner references are written."""

    name: str
    namespace: str
    uid: str | None = None
    kind: str = TRAINJOB
    api_version: str = API_VERSION

    def reference(self) -> list[dict[str, Any]]:
        if self.uid is None:
            return []
        return [
            {
                "apiVersion": self.api_version,
                "kind": self.kind,
                "name": self.name,
                "uid": self.uid,
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]


def ray_version() -> str:
    try:
        return metadata.version("ray")
    except metadata.PackageNotFoundError:  # pragma: no cover - ray is a core dependency
        return "2.60.0"


def cluster_job(spec: JobSpec, fixed_port: bool = True) -> JobSpec:
    """The spec as it runs on the cluster: metrics listen on the pod's address, at a fixed
    port (so the PodMonitor finds them) unless the spec says otherwise; or, where several
    drivers share a pod (a sweep's trials: `fixed_port=False`), at any free port — the
    sweep driver serves them all on METRICS_PORT (deepyard.sweep.metrics)."""
    raw = spec.model_dump(mode="json", exclude_unset=True, by_alias=True)
    telemetry = raw.setdefault("telemetry", {})
    if spec.telemetry.metrics:
        telemetry.setdefault("address", "0.0.0.0")
        if not fixed_port:
            telemetry["port"] = 0
        elif not spec.telemetry.port:
            telemetry["port"] = METRICS_PORT
    return JobSpec.model_validate(raw)


def build(
    spec: TrainJobSpec,
    owner: Owner,
    image: str | None = None,
    classes: Sequence[kueue.WorkloadClass] = (),
) -> list[dict[str, Any]]:
    """The ConfigMap and the RayJob for one TrainJob, in creation order."""
    job = cluster_job(spec.job())
    header = f"made by deepyard-operator for TrainJob {owner.name}, spec hash {spec_hash(job)}"
    config = config_map(owner, labels(job, owner), SPEC_FILE, to_yaml(job, header))
    run = Run(ENTRYPOINT, config["metadata"]["name"], gangs=1)
    return [config, rayjob(spec.kubernetes, job, owner, run, image, classes)]


@dataclass(frozen=True)
class Run:
    """What the head runs (`entrypoint`, reading the spec from ConfigMap `config`), and
    how many gangs of the job's workers run at once (a sweep's concurrent trials)."""

    entrypoint: str
    config: str
    gangs: int = 1


def labels(spec: JobSpec, owner: Owner) -> dict[str, str]:
    return {**MANAGED_BY, LABEL_JOB: owner.name, LABEL_HASH: spec_hash(spec)}


def config_map(owner: Owner, labels: dict[str, str], file: str, text: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _metadata(f"{owner.name}-spec", owner, labels),
        "data": {file: text},
    }


def rayjob(
    k8s: KubernetesSpec,
    job: JobSpec,
    owner: Owner,
    run: Run,
    image: str | None,
    classes: Sequence[kueue.WorkloadClass] = (),
) -> dict[str, Any]:
    """The RayJob running `run` on a RayCluster sized for `run.gangs` gangs of `job`;
    queued, it carries Kueue's labels (`classes`: the WorkloadPriorityClasses to map the
    spec's priority to)."""
    chosen = k8s.image or image
    if not chosen:
        raise SpecError(
            "kubernetes.image is not set; set it to an image with deepyard installed "
            "(or install the chart with jobs.image, or pass --image)"
        )
    meta_labels = labels(job, owner) | kueue.labels(
        k8s.queue_name, k8s.workload_priority_class, k8s.priority_class, job.priority, classes
    )
    body: dict[str, Any] = {
        "entrypoint": run.entrypoint,
        "shutdownAfterJobFinishes": True,
        "ttlSecondsAfterFinished": k8s.ttl_seconds_after_finished,
        "backoffLimit": job.failure.max_restarts,
        "suspend": k8s.queue_name is not None,
        "rayClusterSpec": {
            "rayVersion": ray_version(),
            "headGroupSpec": _head(k8s, job, owner, run.config, chosen),
            "workerGroupSpecs": [_workers(k8s, job, owner, chosen, run.gangs)],
        },
    }
    if k8s.active_deadline_s:
        body["activeDeadlineSeconds"] = k8s.active_deadline_s
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayJob",
        "metadata": _metadata(owner.name, owner, meta_labels),
        "spec": body,
    }


def _metadata(name: str, owner: Owner, labels: dict[str, str]) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": owner.namespace, "labels": labels}
    if owner.uid:
        meta["ownerReferences"] = owner.reference()
    return meta


def _head(
    k8s: KubernetesSpec, job: JobSpec, owner: Owner, config_name: str, image: str
) -> dict[str, Any]:
    resources = {"cpu": k8s.head_cpu, "memory": k8s.head_memory}
    limits = dict(resources)
    container = _container("ray-head", image, k8s, {"requests": resources, "limits": limits})
    container["ports"] = [
        {"name": "gcs-server", "containerPort": 6379},
        {"name": "dashboard", "containerPort": 8265},
        {"name": "client", "containerPort": 10001},
        {"name": "metrics", "containerPort": RAY_METRICS_PORT},
    ]
    if job.telemetry.metrics:
        port = job.telemetry.port or METRICS_PORT
        container["ports"].append({"name": "job-metrics", "containerPort": port})
    container["volumeMounts"].append({"name": "job-spec", "mountPath": SPEC_DIR, "readOnly": True})
    pod = _pod(k8s, container, owner, "head")
    pod["spec"]["volumes"].append({"name": "job-spec", "configMap": {"name": config_name}})
    return {
        "rayStartParams": {"num-cpus": "0", "dashboard-host": "0.0.0.0"},
        "template": pod,
    }


def _workers(
    k8s: KubernetesSpec, job: JobSpec, owner: Owner, image: str, gangs: int
) -> dict[str, Any]:
    res = job.resources
    # A pod is a Ray node: a tensor-parallel group's ranks all-reduce at every layer and
    # must share one (deepyard numbers ranks node by node, and refuses a group split
    # over nodes), so a pod holds one group; STRICT_PACK holds the whole gang in one.
    per_pod = res.num_workers if res.placement == "STRICT_PACK" else job.parallelism.tensor
    replicas = res.num_workers // per_pod * gangs
    amounts: dict[str, Any] = {
        "cpu": str(res.cpus_per_worker * per_pod),
        "memory": _times(k8s.memory_per_worker, per_pod),
    }
    limits = dict(amounts)
    if res.gpus_per_worker:
        limits["nvidia.com/gpu"] = str(res.gpus_per_worker * per_pod)
    container = _container("ray-worker", image, k8s, {"requests": amounts, "limits": limits})
    params = {"num-cpus": str(res.cpus_per_worker * per_pod)}
    if res.gpus_per_worker:
        params["num-gpus"] = str(res.gpus_per_worker * per_pod)
    if res.custom:
        custom = {name: amount * per_pod for name, amount in res.custom.items()}
        params["resources"] = json.dumps(json.dumps(custom))  # KubeRay wants it quoted
    pod = _pod(k8s, container, owner, "worker")
    spread = _anti_affinity(res.placement, owner)
    if spread:
        pod["spec"]["affinity"] = spread
    return {
        "groupName": "workers",
        "replicas": replicas,
        "minReplicas": replicas,
        "maxReplicas": replicas,
        "rayStartParams": params,
        "template": pod,
    }


def _container(
    name: str, image: str, k8s: KubernetesSpec, resources: dict[str, Any]
) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": name,
        "image": image,
        "resources": resources,
        "volumeMounts": [{"name": "shm", "mountPath": "/dev/shm"}],
    }
    if k8s.checkpoint_secret:
        container["envFrom"] = [{"secretRef": {"name": k8s.checkpoint_secret}}]
    return container


def _pod(k8s: KubernetesSpec, container: dict[str, Any], owner: Owner, role: str) -> dict:
    spec: dict[str, Any] = {
        "containers": [container],
        "volumes": [{"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": k8s.shm_size}}],
    }
    if k8s.node_selector:
        spec["nodeSelector"] = dict(k8s.node_selector)
    if k8s.tolerations:
        spec["tolerations"] = [t.manifest() for t in k8s.tolerations]
    if k8s.priority_class:
        spec["priorityClassName"] = k8s.priority_class
    if k8s.service_account:
        spec["serviceAccountName"] = k8s.service_account
    pod_labels = {LABEL_JOB: owner.name, "deepyard.dev/role": role}
    return {"metadata": {"labels": pod_labels}, "spec": spec}


def _anti_affinity(placement: str, owner: Owner) -> dict[str, Any] | None:
    term = {
        "labelSelector": {"matchLabels": {LABEL_JOB: owner.name, "deepyard.dev/role": "worker"}},
        "topologyKey": "kubernetes.io/hostname",
    }
    if placement == "STRICT_SPREAD":
        return {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [term]}}
    if placement == "SPREAD":
        weighted = [{"weight": 100, "podAffinityTerm": term}]
        return {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": weighted}}
    return None


def _times(quantity: str, factor: int) -> str:
    """A Kubernetes quantity times a whole number ("4Gi" x 2 = "8Gi")."""
    if factor == 1:
        return quantity
    number = quantity.rstrip("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
    unit = quantity[len(number) :]
    value = float(number) * factor
    return f"{value:g}{unit}"
