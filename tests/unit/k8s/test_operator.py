"""The operator's behaviour against kmock, kopf's in-memory Kubernetes API: a TrainJob
becomes an owned RayJob (which KubeRay's real CRD accepts), RayJob status changes flow into
the TrainJob's status and printer columns, a failed RayJob fails the TrainJob with its
reason, and deleting the TrainJob removes what it owns.

kmock does no validation, defaulting or garbage collection: the CRD tests (tests/unit/k8s)
cover validation; here the owner references are checked, and the operator's own clean-up.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import kmock
import kopf
import pytest
import pytest_asyncio

from deepyard.k8s import crd
from deepyard.testing import k8s_schema

from .conftest import EXAMPLE_JOBS, IMAGE, REPO, trainjob

pytestmark = pytest.mark.asyncio
NS = "ml"
TRAINJOBS = "deepyard.dev/v1alpha1/trainjobs"
RAYJOBS = "ray.io/v1/rayjobs"
CONFIGMAPS = "v1/configmaps"
SERVER = {"url": ""}


@kopf.on.login()
def _login_to_kmock(**_: Any) -> kopf.ConnectionInfo:
    return kopf.ConnectionInfo(server=SERVER["url"], insecure=True)


@pytest_asyncio.fixture
async def operator(
    kmock: kmock.KubernetesEmulator, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[kmock.KubernetesEmulator]:
    """kopf running deepyard_operator.handlers against kmock, in this event loop."""
    from deepyard_operator import handlers

    for resource, kind in (
        (TRAINJOBS, "TrainJob"),
        ("deepyard.dev/v1alpha1/sweeps", "Sweep"),
        (RAYJOBS, "RayJob"),
    ):
        kmock.resources[resource] = kmock_info(kind, subresources={"status"})
    kmock.resources[CONFIGMAPS] = kmock_info("ConfigMap")
    kmock.resources["v1/events"] = kmock_info("Event")
    # kopf waits to discover these two before it starts watching (as on a real API server)
    kmock.resources["v1/namespaces"] = kmock_info("Namespace", namespaced=False)
    crds = "apiextensions.k8s.io/v1/customresourcedefinitions"
    kmock.resources[crds] = kmock_info("CustomResourceDefinition", namespaced=False)
    url = str(kmock.url).rstrip("/")
    SERVER["url"] = url
    monkeypatch.setenv("DEEPYARD_K8S_HOST", url)
    monkeypatch.setattr(handlers, "_cluster", None)
    monkeypatch.setattr(handlers, "fetch_metrics", fake_driver_metrics)
    stop = asyncio.Event()
    task = asyncio.create_task(
        kopf.operator(
            standalone=True,
            namespaces=[NS],
            clusterwide=False,
            stop_flag=stop,
            registry=kopf.get_default_registry(),
        )
    )
    try:
        yield kmock
    finally:
        stop.set()
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await asyncio.wait_for(task, timeout=1)  # then cancelled: watch streams stay open


SCRAPED: list[str] = []


def fake_driver_metrics(url: str) -> str:
    """The driver's /metrics as the exporter serves it (the head Service has no DNS here);
    a sweep's driver serves its own gauges (deepyard.sweep.metrics) beside its trials'."""
    SCRAPED.append(url)
    if "sweep" in url:
        return "\n".join(
            [
                "# TYPE deepyard_sweep_trials gauge",
                'deepyard_sweep_trials{job="digits-sweep",state="running"} 2',
                'deepyard_sweep_trials{job="digits-sweep",state="finished"} 1',
                "# TYPE deepyard_sweep_best_metric gauge",
                'deepyard_sweep_best_metric{job="digits-sweep",metric="accuracy"} 0.9',
                "",
            ]
        )
    return "\n".join(
        [
            "# TYPE deepyard_train_step gauge",
            'deepyard_train_step{job="digits-cnn",run="r1",attempt="1",rank="0"} 120',
            'deepyard_train_step{job="digits-cnn",run="r1",attempt="1",rank="1"} 119',
            "# TYPE deepyard_train_loss gauge",
            'deepyard_train_loss{job="digits-cnn",run="r1",attempt="1",rank="0"} 0.42',
            "# TYPE deepyard_checkpoint_saves_total counter",
            'deepyard_checkpoint_saves_total{job="digits-cnn",run="r1",attempt="1"} 2',
            "# TYPE deepyard_checkpoint_last_step gauge",
            'deepyard_checkpoint_last_step{job="digits-cnn",run="r1"} 100',
            "",
        ]
    )


def kmock_info(
    kind: str, subresources: set[str] | None = None, namespaced: bool = True
) -> kmock.ResourceInfo:
    verbs = {"get", "list", "watch", "create", "patch", "update", "delete"}
    return kmock.ResourceInfo(
        kind=kind, namespaced=namespaced, verbs=verbs, subresources=subresources or set()
    )


def obj(emulator: kmock.KubernetesEmulator, resource: str, name: str) -> dict[str, Any] | None:
    """The stored object, as the API server would return it (None when absent or deleted)."""
    for (res, namespace, found), value in emulator.objects.items():
        path = "/".join(part for part in (res.group, res.version, res.plural) if part)
        if path == resource and namespace == NS and found == name and not value.deleted:
            return copy.deepcopy(dict(value.raw))
    return None


async def until(check: Callable[[], Any], timeout: float = 20.0) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        value = check()
        if value:
            return value
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {check.__doc__ or check}")


async def api(method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    import aiohttp

    headers = {"Content-Type": "application/merge-patch+json"} if method == "PATCH" else {}
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, SERVER["url"] + path, json=body, headers=headers) as response,
    ):
        assert response.status < 300, await response.text()
        return dict(await response.json())


def new_trainjob(**kubernetes: Any) -> dict[str, Any]:
    manifest = trainjob(EXAMPLE_JOBS[0], **kubernetes)
    # what the API server would add (kmock stores objects as given)
    manifest["metadata"] |= {
        "uid": "6f1c0ad2-tj",
        "namespace": NS,
        "resourceVersion": "1",
        "creationTimestamp": "2026-12-07T10:00:00Z",
    }
    return manifest


async def create_trainjob(manifest: dict[str, Any]) -> None:
    await api("POST", f"/apis/deepyard.dev/v1alpha1/namespaces/{NS}/trainjobs", manifest)


async def rayjob_status(name: str, status: dict[str, Any]) -> None:
    path = f"/apis/ray.io/v1/namespaces/{NS}/rayjobs/{name}/status"
    await api("PATCH", path, {"status": status})


def printer_columns(trainjob_obj: dict[str, Any]) -> dict[str, Any]:
    """`kubectl get trainjobs` columns, by evaluating the CRD's jsonPaths on the object."""
    columns = crd.definition("TrainJob")["spec"]["versions"][0]["additionalPrinterColumns"]
    shown = {}
    for column in columns:
        node: Any = trainjob_obj
        for part in column["jsonPath"].strip(".").split("."):
            node = node.get(part) if isinstance(node, dict) else None
        shown[column["name"]] = node
    return shown


async def test_trainjob_becomes_an_owned_rayjob_and_follows_its_status(
    operator, kuberay_crds, monkeypatch
) -> None:
    classes = [{"name": "low", "value": 1, "minPriority": -1000},
               {"name": "high", "value": 9, "minPriority": 500}]  # fmt: skip
    monkeypatch.setenv("DEEPYARD_KUEUE_PRIORITY_CLASSES", json.dumps(classes))  # the chart's
    manifest = new_trainjob(queue_name="team-a")
    manifest["spec"]["priority"] = 800
    await create_trainjob(manifest)
    rayjob = await until(lambda: obj(operator, RAYJOBS, "digits-cnn"))
    assert rayjob["metadata"]["labels"]["kueue.x-k8s.io/priority-class"] == "high"
    (owner,) = rayjob["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["name"], owner["uid"]) == ("TrainJob", "digits-cnn", "6f1c0ad2-tj")
    assert rayjob["spec"]["suspend"] is True  # queued in Kueue until admitted
    assert k8s_schema.problems(rayjob, kuberay_crds["RayJob"]) == []
    config = obj(operator, CONFIGMAPS, "digits-cnn-spec")
    assert config and "name: digits-cnn" in config["data"]["job.yaml"]
    assert config["metadata"]["ownerReferences"] == rayjob["metadata"]["ownerReferences"]

    def phase(expected: str) -> Callable[[], Any]:
        def check() -> Any:
            found = obj(operator, TRAINJOBS, "digits-cnn") or {}
            return found if found.get("status", {}).get("phase") == expected else None

        check.__doc__ = f"TrainJob phase {expected}"
        return check

    queued = await until(phase("Queued"))
    assert printer_columns(queued)["Queue"] == "team-a"

    # Kueue admits it, KubeRay starts the cluster and the job runs.
    await rayjob_status(
        "digits-cnn",
        {
            "jobDeploymentStatus": "Running",
            "jobStatus": "RUNNING",
            "rayClusterName": "digits-cnn-x7k2p",
            "startTime": "2026-12-07T10:00:00Z",
        },
    )
    running = await until(phase("Running"))
    columns = printer_columns(running)
    assert (columns["Phase"], columns["Workers"], columns["Attempts"]) == ("Running", 2, 1)
    assert running["status"]["rayClusterName"] == "digits-cnn-x7k2p"
    conditions = {c["type"]: c["status"] for c in running["status"]["conditions"]}
    # While running, the driver's metrics are summarised into the status (the Step column).
    with_metrics = await until(
        lambda: (obj(operator, TRAINJOBS, "digits-cnn") or {}).get("status", {}).get("metrics")
    )
    assert with_metrics == {"step": 120, "loss": 0.42, "checkpointsSaved": 2}
    running = obj(operator, TRAINJOBS, "digits-cnn") or {}
    assert running["status"]["lastCheckpointStep"] == 100
    assert printer_columns(running)["Checkpoint"] == 100  # kubectl get -o wide
    assert SCRAPED[-1] == "http://digits-cnn-x7k2p-head-svc.ml.svc:9400/metrics"
    assert conditions == {"Admitted": "True", "Running": "True", "Succeeded": "False",
                          "Failed": "False"}  # fmt: skip

    await rayjob_status(
        "digits-cnn", {"jobDeploymentStatus": "Complete", "jobStatus": "SUCCEEDED", "succeeded": 1}
    )
    done = await until(phase("Succeeded"))
    assert printer_columns(done)["Attempts"] == 1


async def test_a_failed_rayjob_fails_the_trainjob_with_its_reason(operator) -> None:
    await create_trainjob(new_trainjob())
    await until(lambda: obj(operator, RAYJOBS, "digits-cnn"))
    await rayjob_status(
        "digits-cnn",
        {
            "jobDeploymentStatus": "Failed",
            "jobStatus": "FAILED",
            "reason": "AppFailed",
            "message": "training failed on worker rank 1: CUDA out of memory",
            "failed": 1,
        },
    )

    def failed() -> Any:
        found = obj(operator, TRAINJOBS, "digits-cnn") or {}
        return found if found.get("status", {}).get("phase") == "Failed" else None

    trainjob_obj = await until(failed)
    status = trainjob_obj["status"]
    assert status["reason"] == "AppFailed"
    assert "CUDA out of memory" in status["message"]
    assert printer_columns(trainjob_obj)["Attempts"] == 1
    (condition,) = [c for c in status["conditions"] if c["type"] == "Failed"]
    assert condition["status"] == "True" and condition["reason"] == "AppFailed"


async def test_deleting_the_trainjob_removes_its_rayjob_and_configmap(operator) -> None:
    await create_trainjob(new_trainjob())
    await until(lambda: obj(operator, RAYJOBS, "digits-cnn"))
    finalized = await until(
        lambda: (obj(operator, TRAINJOBS, "digits-cnn") or {}).get("metadata", {}).get("finalizers")
    )
    assert finalized == ["deepyard.dev/operator"]
    await api("DELETE", f"/apis/deepyard.dev/v1alpha1/namespaces/{NS}/trainjobs/digits-cnn")
    await until(lambda: obj(operator, RAYJOBS, "digits-cnn") is None)
    await until(lambda: obj(operator, TRAINJOBS, "digits-cnn") is None)
    assert obj(operator, CONFIGMAPS, "digits-cnn-spec") is None


async def test_an_invalid_spec_fails_the_trainjob_without_a_rayjob(operator) -> None:
    manifest = new_trainjob()
    manifest["spec"]["model"]["args"] = {"no_such_arg": 1}  # only pydantic knows builders
    await create_trainjob(manifest)

    def failed() -> Any:
        found = obj(operator, TRAINJOBS, "digits-cnn") or {}
        return found if found.get("status", {}).get("phase") == "Failed" else None

    status = (await until(failed))["status"]
    assert status["reason"] == "InvalidSpec"
    assert "model.args has no_such_arg" in status["message"]
    assert obj(operator, RAYJOBS, "digits-cnn") is None


async def test_a_sweep_becomes_a_rayjob_running_deepyard_sweep(operator, kuberay_crds) -> None:
    from deepyard.k8s.render import resource

    manifest = resource(REPO / "jobs" / "sweeps" / "digits_sweep.yaml", [], {"image": IMAGE})
    manifest["metadata"] |= {"namespace": NS, "uid": "9a2e-sw", "resourceVersion": "1"}
    await api("POST", f"/apis/deepyard.dev/v1alpha1/namespaces/{NS}/sweeps", manifest)
    rayjob = await until(lambda: obj(operator, RAYJOBS, "digits-sweep"))
    assert rayjob["metadata"]["ownerReferences"][0]["kind"] == "Sweep"
    assert " sweep run " in rayjob["spec"]["entrypoint"]
    assert k8s_schema.problems(rayjob, kuberay_crds["RayJob"]) == []
    running = {"jobDeploymentStatus": "Running", "jobStatus": "RUNNING"}
    await rayjob_status("digits-sweep", running | {"rayClusterName": "digits-sweep-q2w"})
    sweeps = "deepyard.dev/v1alpha1/sweeps"
    await until(
        lambda: (
            (obj(operator, sweeps, "digits-sweep") or {}).get("status", {}).get("phase")
            == "Running"
        )
    )
    # the metrics timer runs for Sweeps too: the sweep driver's summary lands in the status
    summary = await until(
        lambda: (obj(operator, sweeps, "digits-sweep") or {}).get("status", {}).get("metrics")
    )
    assert summary == {"trialsRunning": 2, "trialsDone": 1, "trialsFailed": 0,
                       "bestMetric": 0.9, "metric": "accuracy"}  # fmt: skip
    assert SCRAPED[-1] == "http://digits-sweep-q2w-head-svc.ml.svc:9400/metrics"
