"""`deepyard k8s render` (no cluster) and `deepyard submit --k8s` (against kmock): what a
user applies is what our CRDs accept, and what the operator makes of it is what KubeRay's
CRD accepts; user errors are a message and exit code 2."""

from __future__ import annotations

import asyncio
from pathlib import Path

import kmock
import pytest
import yaml
from typer.testing import CliRunner

from deepyard.cli.main import app
from deepyard.k8s import SWEEP, TRAINJOB, crd
from deepyard.k8s.render import resource
from deepyard.testing import k8s_schema

from .conftest import EXAMPLE_JOBS, IMAGE, REPO

runner = CliRunner()
SWEEP_FILE = REPO / "jobs" / "sweeps" / "digits_sweep.yaml"


def render(*args: str) -> list[dict]:
    result = runner.invoke(app, ["k8s", "render", *args])
    assert result.exit_code == 0, result.output
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def test_render_prints_the_trainjob_and_what_the_operator_makes(kuberay_crds) -> None:
    trainjob, config, rayjob = render(
        str(EXAMPLE_JOBS[0]), "--image", IMAGE, "--queue", "team-a", "-n", "ml"
    )
    assert (trainjob["kind"], config["kind"], rayjob["kind"]) == ("TrainJob", "ConfigMap", "RayJob")
    assert trainjob["spec"]["kubernetes"] == {"image": IMAGE, "namespace": "ml",
                                              "queue_name": "team-a"}  # fmt: skip
    assert k8s_schema.problems(trainjob, crd.definition(TRAINJOB)) == []
    assert k8s_schema.problems(rayjob, kuberay_crds["RayJob"]) == []
    assert rayjob["metadata"]["namespace"] == "ml" and "ownerReferences" not in rayjob["metadata"]


def test_render_labels_a_queued_job_as_the_operator_would(monkeypatch) -> None:
    classes = '[{"name": "low", "value": 1, "minPriority": -1000}]'
    monkeypatch.setenv("DEEPYARD_KUEUE_PRIORITY_CLASSES", classes)  # the chart's values
    rayjob = render(str(EXAMPLE_JOBS[0]), "--image", IMAGE, "--queue", "q")[-1]
    assert rayjob["metadata"]["labels"]["kueue.x-k8s.io/priority-class"] == "low"
    monkeypatch.setenv("DEEPYARD_KUEUE_PRIORITY_CLASSES", "[{}]")
    result = runner.invoke(app, ["k8s", "render", str(EXAMPLE_JOBS[0]), "--image", IMAGE])
    assert result.exit_code == 2 and "DEEPYARD_KUEUE_PRIORITY_CLASSES" in result.stderr


def test_render_a_sweep(kuberay_crds) -> None:
    sweep, config, rayjob = render(str(SWEEP_FILE), "--image", IMAGE)
    assert sweep["kind"] == "Sweep" and isinstance(sweep["spec"]["job"], dict)  # job inline
    assert k8s_schema.problems(sweep, crd.definition(SWEEP)) == []
    assert k8s_schema.problems(rayjob, kuberay_crds["RayJob"]) == []
    assert "sweep run /etc/deepyard/sweep.yaml --address auto" in rayjob["spec"]["entrypoint"]
    # the driver serves the sweep's /metrics (its trials' merged in) where the PodMonitor looks
    assert rayjob["spec"]["entrypoint"].endswith("--metrics-address 0.0.0.0 --metrics-port 9400")
    head = rayjob["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]
    assert {"name": "job-metrics", "containerPort": 9400} in head["spec"]["containers"][0]["ports"]
    assert head["metadata"]["labels"]["deepyard.dev/role"] == "head"
    workers = rayjob["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]
    assert workers["replicas"] == 2 * 2  # 2 workers a trial x budget.max_concurrent 2
    text = config["data"]["sweep.yaml"]
    from deepyard.spec.sweep_load import load_sweep_text

    assert load_sweep_text(text, "sweep.yaml").name == "digits-sweep"  # `sweep run` reads it


def test_render_reads_a_trainjob_manifest_back(tmp_path: Path) -> None:
    first = render(str(EXAMPLE_JOBS[0]), "--image", IMAGE)[0]
    path = tmp_path / "trainjob.yaml"
    path.write_text(yaml.safe_dump(first))
    assert render(str(path))[0] == first


def test_render_names_the_field_and_the_fix(tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["k8s", "render", str(EXAMPLE_JOBS[0]), "--set", "checkpoint.every_steps=10"]
    )
    assert result.exit_code == 2
    assert "checkpoint.uri=None is a local path" in result.stderr
    assert "s3://" in result.stderr and "Traceback" not in result.output
    result = runner.invoke(app, ["k8s", "render", str(EXAMPLE_JOBS[0]), "--set", "name=a_b"])
    assert result.exit_code == 2 and "cannot name Kubernetes objects" in result.stderr


def test_crds_command_writes_what_the_chart_ships(tmp_path: Path) -> None:
    result = runner.invoke(app, ["k8s", "crds", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    for path in tmp_path.glob("*.yaml"):
        shipped = REPO / "charts" / "deepyard" / "crds" / path.name
        assert path.read_text() == shipped.read_text()


@pytest.mark.asyncio
async def test_submit_k8s_creates_the_trainjob(
    kmock: kmock.KubernetesEmulator, monkeypatch
) -> None:
    kmock.resources["deepyard.dev/v1alpha1/trainjobs"] = kmock.ResourceInfo(
        kind="TrainJob", namespaced=True, verbs={"create", "get", "list"}
    )
    monkeypatch.setenv("DEEPYARD_K8S_HOST", str(kmock.url).rstrip("/"))
    placement = ["--image", IMAGE, "-n", "ml"]
    command = ["k8s", "submit", str(EXAMPLE_JOBS[0]), *placement]
    result = await asyncio.to_thread(runner.invoke, app, command)  # kmock serves this loop
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "ml/digits-cnn"
    stored = [dict(v.raw) for (r, ns, name), v in kmock.objects.items() if name == "digits-cnn"]
    expected = resource(EXAMPLE_JOBS[0], placement={"image": IMAGE, "namespace": "ml"})
    assert stored == [expected]
    # `deepyard submit --k8s` is the same command; a second one names the conflict and the fix
    monkeypatch.setenv("DEEPYARD_IMAGE", IMAGE)
    command = ["submit", "--k8s", str(EXAMPLE_JOBS[0]), "--set", "kubernetes.namespace=ml"]
    again = await asyncio.to_thread(runner.invoke, app, command)
    assert again.exit_code == 1, again.output
    assert "a TrainJob named digits-cnn already exists in namespace ml" in again.stderr


def test_without_a_namespace_the_appliers_context_decides(tmp_path: Path, monkeypatch) -> None:
    trainjob, config, _ = render(str(EXAMPLE_JOBS[0]), "--image", IMAGE)
    assert "namespace" not in trainjob["metadata"]  # kubectl apply: the context's namespace
    assert config["metadata"]["namespace"] == "default"  # (the preview has to pick one)
    kubeconfig = tmp_path / "config"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": "http://127.0.0.1:9"}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [
                    {"name": "team", "context": {"cluster": "c", "user": "u", "namespace": "ml"}},
                    {"name": "bare", "context": {"cluster": "c", "user": "u"}},
                ],
                "current-context": "team",
            }
        )
    )
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    monkeypatch.delenv("DEEPYARD_K8S_HOST", raising=False)
    from deepyard.k8s.client import Cluster

    assert Cluster().namespace == "ml"  # `deepyard submit --k8s` creates it there
    assert Cluster(context="bare").namespace == "default"


PLACEMENT = ["--image", IMAGE, "-n", "ml", "--queue", "team-a", "--priority-class",
             "training-high", "--workload-priority-class", "urgent"]  # fmt: skip


def test_render_placement_options_win_over_the_specs_kubernetes_section(tmp_path: Path) -> None:
    spec = yaml.safe_load(EXAMPLE_JOBS[0].read_text())
    spec["kubernetes"] = {"image": "old:1", "queue_name": "team-z", "shm_size": "2Gi"}
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(spec))
    trainjob, _, rayjob = render(str(path), *PLACEMENT)
    assert trainjob["spec"]["kubernetes"] == {
        "image": IMAGE,
        "queue_name": "team-a",
        "shm_size": "2Gi",  # the spec's own, where no option says otherwise
        "namespace": "ml",
        "priority_class": "training-high",
        "workload_priority_class": "urgent",
    }
    labels = rayjob["metadata"]["labels"]
    assert labels["kueue.x-k8s.io/queue-name"] == "team-a"
    assert labels["kueue.x-k8s.io/priority-class"] == "urgent"
    head = rayjob["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]
    assert head["priorityClassName"] == "training-high"


@pytest.mark.parametrize("command", [["k8s", "render"], ["submit", "--k8s"]])
def test_a_bad_placement_option_is_named(command) -> None:
    args = [*command, str(EXAMPLE_JOBS[0]), "--image", IMAGE, "--queue", "Team_A"]
    result = runner.invoke(app, args)  # refused before any cluster is asked
    assert result.exit_code == 2, result.output
    assert "--queue: kubernetes.queue_name: 'Team_A' is not a Kubernetes object name" in (
        result.stderr
    )


def test_placement_options_without_k8s_are_reported(monkeypatch) -> None:
    monkeypatch.delenv("DEEPYARD_ADDRESS", raising=False)
    result = runner.invoke(app, ["submit", str(EXAMPLE_JOBS[0]), "--queue", "q", "-n", "ml"])
    assert "warning: --namespace, --queue apply only with --k8s; ignored" in result.stderr


@pytest.mark.asyncio
async def test_submit_k8s_takes_the_placement_options(
    kmock: kmock.KubernetesEmulator, monkeypatch
) -> None:
    kmock.resources["deepyard.dev/v1alpha1/trainjobs"] = kmock.ResourceInfo(
        kind="TrainJob", namespaced=True, verbs={"create", "get", "list"}
    )
    monkeypatch.setenv("DEEPYARD_K8S_HOST", str(kmock.url).rstrip("/"))
    command = ["submit", "--k8s", str(EXAMPLE_JOBS[0]), *PLACEMENT]
    result = await asyncio.to_thread(runner.invoke, app, command)  # kmock serves this loop
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "ml/digits-cnn"
    (stored,) = [dict(v.raw) for (_, ns, _), v in kmock.objects.items() if ns == "ml"]
    assert stored["spec"]["kubernetes"] == {
        "image": IMAGE,
        "namespace": "ml",
        "queue_name": "team-a",
        "priority_class": "training-high",
        "workload_priority_class": "urgent",
    }
    assert k8s_schema.problems(stored, crd.definition(TRAINJOB)) == []  # our CRD accepts it
