"""TrainJob → ConfigMap + KubeRay RayJob: every RayJob validates against KubeRay v1.7.0's
real RayJob CRD (OpenAPI schema with jsonschema, CEL rules with cel-python), its pod
templates against Kubernetes' own schemas, and the cluster is sized from the spec."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from deepyard.k8s.placement import validate_trainjob
from deepyard.k8s.rayjob import ENTRYPOINT, Owner, build
from deepyard.spec import load_text
from deepyard.testing import k8s_schema

from .conftest import EXAMPLE_JOBS, IMAGE, changed, trainjob

S3 = {"checkpoint.uri": "s3://ckpt/digits", "checkpoint.every_steps": 50}
VARIANTS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "defaults": ({}, {}),
    "gpus-queued": (
        {"resources.gpus_per_worker": 2, "resources.num_workers": 4, "failure.max_restarts": 3},
        {
            "queue_name": "team-a",
            "priority_class": "high",
            "node_selector": {"nvidia.com/gpu.product": "H100"},
            "tolerations": [
                {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
            ],
        },
    ),
    "strict-pack": ({"resources.placement": "STRICT_PACK", "resources.num_workers": 4}, {}),
    "spread": ({"resources.placement": "SPREAD"}, {}),
    "strict-spread-custom": (
        {"resources.placement": "STRICT_SPREAD", "resources.custom": {"a100_node": 1}},
        {},
    ),
    "s3-checkpoints": (S3, {"checkpoint_secret": "s3-creds", "active_deadline_s": 7200}),
}


def objects(job_file: Path, fields: dict[str, Any], kubernetes: dict[str, Any]) -> list[dict]:
    manifest = trainjob(job_file, **kubernetes)
    for path, value in fields.items():
        manifest = changed(manifest, path, value)
    spec = validate_trainjob(manifest["spec"])
    return build(spec, Owner(spec.name, "ml", "0d3c-uid"))


CASES = [(f, v) for f in EXAMPLE_JOBS for v in VARIANTS]


@pytest.mark.parametrize(("job_file", "variant"), CASES, ids=[f"{f.stem}-{v}" for f, v in CASES])
def test_rayjob_validates_against_kuberay_v1_7_crd(job_file, variant, kuberay_crds) -> None:
    config, rayjob = objects(job_file, *VARIANTS[variant])
    assert k8s_schema.problems(rayjob, kuberay_crds["RayJob"]) == []
    cluster = {
        "apiVersion": "ray.io/v1",
        "kind": "RayCluster",
        "metadata": {"name": "c"},
        "spec": rayjob["spec"]["rayClusterSpec"],
    }
    assert k8s_schema.problems(cluster, kuberay_crds["RayCluster"]) == []
    cluster_spec = rayjob["spec"]["rayClusterSpec"]
    groups = [cluster_spec["headGroupSpec"], *cluster_spec["workerGroupSpecs"]]
    for version in ("1.29", "1.33"):
        kubernetes_validate.validate(config, version, strict=True)
        for group in groups:
            template = {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "t"}}
            kubernetes_validate.validate({**template, "template": group["template"]}, version, True)
    for group in groups:
        for container in group["template"]["spec"]["containers"]:
            assert all(len(port["name"]) <= 15 for port in container.get("ports", []))


def test_a_rayjob_the_crd_refuses_is_caught(kuberay_crds) -> None:
    """The checker is not a rubber stamp: KubeRay's own CEL rule and schema both bite."""
    _, rayjob = objects(EXAMPLE_JOBS[0], {}, {})
    bad = yaml.safe_load(yaml.safe_dump(rayjob))
    bad["spec"]["deletionStrategy"] = {"onSuccess": {"policy": "DeleteCluster"}}
    assert k8s_schema.problems(bad, kuberay_crds["RayJob"]) == [
        "spec.deletionStrategy: deletionStrategy requires either BOTH onSuccess and "
        "onFailure, OR the deletionRules field (cannot be empty)"
    ]
    bad["spec"].pop("deletionStrategy")
    bad["spec"]["backoffLimit"] = "three"
    assert "spec.backoffLimit: 'three' is not of type 'integer'" in k8s_schema.problems(
        bad, kuberay_crds["RayJob"]
    )


def test_rayjob_runs_deepyard_on_a_cluster_sized_from_the_spec() -> None:
    config, rayjob = objects(EXAMPLE_JOBS[0], *VARIANTS["gpus-queued"])
    spec = rayjob["spec"]
    assert spec["entrypoint"] == ENTRYPOINT
    assert spec["entrypoint"].endswith("--address auto")
    assert spec["shutdownAfterJobFinishes"] is True
    assert spec["backoffLimit"] == 3
    assert spec["suspend"] is True  # Kueue admits it by unsuspending
    assert rayjob["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-a"
    workers = spec["rayClusterSpec"]["workerGroupSpecs"][0]
    assert workers["replicas"] == workers["minReplicas"] == workers["maxReplicas"] == 4
    assert workers["rayStartParams"]["num-gpus"] == "2"
    pod = workers["template"]["spec"]
    assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "2"
    assert pod["priorityClassName"] == "high"
    assert pod["nodeSelector"] == {"nvidia.com/gpu.product": "H100"}
    assert pod["tolerations"][0]["key"] == "nvidia.com/gpu"
    assert {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": "1Gi"}} in pod["volumes"]
    head = spec["rayClusterSpec"]["headGroupSpec"]
    assert head["rayStartParams"]["num-cpus"] == "0"  # the gang lands on the worker pods
    volumes = head["template"]["spec"]["volumes"]
    assert {"name": "job-spec", "configMap": {"name": config["metadata"]["name"]}} in volumes


def test_owner_references_make_the_trainjob_own_everything() -> None:
    for obj in objects(EXAMPLE_JOBS[0], {}, {}):
        (ref,) = obj["metadata"]["ownerReferences"]
        assert ref["kind"] == "TrainJob" and ref["uid"] == "0d3c-uid" and ref["controller"]
        assert obj["metadata"]["namespace"] == "ml"


def test_strict_pack_is_one_pod_holding_the_gang_and_spread_is_anti_affinity() -> None:
    _, packed = objects(EXAMPLE_JOBS[0], *VARIANTS["strict-pack"])
    group = packed["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]
    assert group["replicas"] == 1 and group["rayStartParams"]["num-cpus"] == "4"
    assert group["template"]["spec"]["containers"][0]["resources"]["limits"]["memory"] == "16Gi"
    _, spread = objects(EXAMPLE_JOBS[0], *VARIANTS["strict-spread-custom"])
    group = spread["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]
    affinity = group["template"]["spec"]["affinity"]["podAntiAffinity"]
    assert "requiredDuringSchedulingIgnoredDuringExecution" in affinity
    assert group["rayStartParams"]["resources"] == '"{\\"a100_node\\": 1.0}"'


def test_a_tensor_parallel_group_is_one_pod() -> None:
    gpt = EXAMPLE_JOBS[0].with_name("rotten_tomatoes_gpt.yaml")
    fields = {
        "resources.num_workers": 4,
        "resources.gpus_per_worker": 1,
        "parallelism": {"zero_stage": 1, "tensor": 2},
    }
    _, rayjob = objects(gpt, fields, {})
    group = rayjob["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]
    assert group["replicas"] == 2  # two groups of two ranks
    assert group["rayStartParams"]["num-gpus"] == "2"
    limits = group["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert limits["nvidia.com/gpu"] == "2"


def test_checkpoint_credentials_come_from_the_secret() -> None:
    _, rayjob = objects(EXAMPLE_JOBS[0], *VARIANTS["s3-checkpoints"])
    cluster = rayjob["spec"]["rayClusterSpec"]
    for group in (cluster["headGroupSpec"], *cluster["workerGroupSpecs"]):
        container = group["template"]["spec"]["containers"][0]
        assert container["envFrom"] == [{"secretRef": {"name": "s3-creds"}}]
    assert rayjob["spec"]["activeDeadlineSeconds"] == 7200


def test_the_configmap_holds_the_job_deepyard_run_reads_unchanged() -> None:
    config, rayjob = objects(EXAMPLE_JOBS[0], {}, {})
    text = config["data"]["job.yaml"]
    job = load_text(text, "job.yaml", check_paths=False)
    assert job.name == "digits-cnn" and job.resources.num_workers == 2
    # metrics listen on the pod (for the PodMonitor) at the port the head declares
    assert (job.telemetry.address, job.telemetry.port) == ("0.0.0.0", 9400)
    ports = rayjob["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]
    assert {"name": "job-metrics", "containerPort": 9400} in ports["containers"][0]["ports"]
    assert rayjob["metadata"]["labels"]["deepyard.dev/spec-hash"] in text


def test_image_is_required_somewhere() -> None:
    from deepyard.errors import SpecError

    manifest = changed(trainjob(EXAMPLE_JOBS[0]), "kubernetes.image", None)
    spec = validate_trainjob(manifest["spec"])
    with pytest.raises(SpecError, match=r"kubernetes.image is not set"):
        build(spec, Owner("digits-cnn", "ml"))
    assert (
        build(spec, Owner("digits-cnn", "ml"), image=IMAGE)[1]["metadata"].get("ownerReferences")
        is None
    )
