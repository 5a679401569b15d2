"""The Helm chart with the real helm binary (scripts/setup.sh extracts it): lint --strict and
template across values; every built-in object passes kubernetes-validate --strict for 1.29
and 1.33; least-privilege RBAC; the chart ships the same alert, dashboard and CRD files the
rest of the repo checks."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from deepyard.k8s import SWEEP, TRAINJOB, crd, kueue

from .conftest import REPO

CHART = REPO / "charts" / "deepyard"
KUBE_VERSIONS = ("1.29", "1.33")
VALUES: dict[str, dict[str, Any]] = {
    "default": {},
    "namespaced": {
        "operator": {"watchNamespaces": ["team-a", "team-b"], "logLevel": "debug"},
        "jobs": {"image": "registry.example/deepyard:0.1.0"},
        "serviceAccount": {"name": "deepyard-operator"},
        "monitoring": {"podMonitor": {"labels": {"release": "kube-prometheus-stack"}}},
        "grafana": {"dashboards": {"namespace": "grafana", "folder": "ML"}},
    },
    "kueue": {
        "kueue": {
            "workloadPriorityClasses": {
                "enabled": True,
                "classes": [
                    {"name": "batch", "value": -10, "minPriority": -1000},
                    {"name": "prod", "value": 5000, "minPriority": 100, "description": "prod"},
                ],
            }
        }
    },
    "no-monitoring": {
        "serviceAccount": {"create": False, "name": "existing"},
        "monitoring": {"podMonitor": {"enabled": False}, "prometheusRule": {"enabled": False}},
        "grafana": {"dashboards": {"enabled": False}},
    },
}


def _helm() -> str | None:
    cache = Path(os.environ.get("DEEPYARD_CACHE", Path.home() / ".cache" / "deepyard"))
    for candidate in (
        os.environ.get("DEEPYARD_HELM"),
        cache / "bin" / "helm",
        Path.home() / ".cache" / "deepyard" / "bin" / "helm",
        shutil.which("helm"),
    ):
        if candidate and Path(candidate).is_file():
            return str(candidate)
    return None


HELM = _helm()
pytestmark = pytest.mark.skipif(
    HELM is None, reason="no helm binary: run scripts/setup.sh (or set DEEPYARD_HELM)"
)


def helm(*args: str, values: dict[str, Any] | None = None, tmp_path: Path) -> str:
    file = tmp_path / "values.yaml"
    file.write_text(yaml.safe_dump(values or {}))
    assert HELM is not None
    done = subprocess.run(
        [HELM, *args, str(CHART), "-f", str(file)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr + done.stdout
    return done.stdout


def rendered(values: dict[str, Any], version: str, tmp_path: Path) -> list[dict[str, Any]]:
    text = helm(
        "template", "dy", "--namespace", "deepyard", "--include-crds",
        "--kube-version", f"{version}.0", values=values, tmp_path=tmp_path,
    )  # fmt: skip
    return [doc for doc in yaml.safe_load_all(text) if doc]


@pytest.mark.parametrize("name", sorted(VALUES))
def test_helm_lint_strict(name, tmp_path) -> None:
    helm("lint", "--strict", values=VALUES[name], tmp_path=tmp_path)


def test_values_schema_refuses_a_typo(tmp_path) -> None:
    file = tmp_path / "bad.yaml"
    file.write_text(yaml.safe_dump({"operator": {"watchNamespace": ["a"]}}))
    assert HELM is not None
    done = subprocess.run(
        [HELM, "lint", "--strict", str(CHART), "-f", str(file)], capture_output=True, text=True
    )
    assert done.returncode != 0
    assert "watchNamespace" in done.stdout + done.stderr


@pytest.mark.parametrize("version", KUBE_VERSIONS)
@pytest.mark.parametrize("name", sorted(VALUES))
def test_every_built_in_object_validates(name, version, tmp_path) -> None:
    objects = rendered(VALUES[name], version, tmp_path)
    kinds = {obj["kind"] for obj in objects}
    assert {"CustomResourceDefinition", "Deployment", "Role", "RoleBinding"} <= kinds
    for obj in objects:
        if obj["apiVersion"].startswith("monitoring.coreos.com/"):
            continue  # Prometheus Operator kinds: checked below against the shipped files
        if (obj["apiVersion"], obj["kind"]) == (kueue.API_VERSION, kueue.KIND):
            jsonschema.validate(obj, WORKLOAD_PRIORITY_CLASS)  # Kueue's CRD kind, not built in
            continue
        kubernetes_validate.validate(obj, version, strict=True)  # unknown kinds raise


# A WorkloadPriorityClass as Kueue documents it (kueue.sigs.k8s.io, concepts/workload
# priority class; v1beta1): cluster-scoped, an int32 `value`, an optional `description`.
WORKLOAD_PRIORITY_CLASS = {
    "type": "object",
    "additionalProperties": False,
    "required": ["apiVersion", "kind", "metadata", "value"],
    "properties": {
        "apiVersion": {"const": "kueue.x-k8s.io/v1beta1"},
        "kind": {"const": "WorkloadPriorityClass"},
        "metadata": {
            "type": "object",
            "required": ["name"],
            "not": {"required": ["namespace"]},
            "properties": {
                "name": {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
            },
        },
        "value": {"type": "integer", "minimum": -(2**31), "maximum": 2**31 - 1},
        "description": {"type": "string"},
    },
}


def test_kueue_classes_install_and_reach_the_operator(tmp_path) -> None:
    values = VALUES["kueue"]["kueue"]["workloadPriorityClasses"]
    objects = rendered(VALUES["kueue"], "1.33", tmp_path)
    shipped = [o for o in objects if o["kind"] == kueue.KIND]
    expected = [kueue.manifest(c) for c in kueue.parse_classes(json.dumps(values["classes"]))]
    assert [{k: v for k, v in o.items() if k != "metadata"} for o in shipped] == [
        {k: v for k, v in e.items() if k != "metadata"} for e in expected
    ]
    assert [o["metadata"]["name"] for o in shipped] == ["batch", "prod"]
    deployment = next(o for o in objects if o["kind"] == "Deployment")
    env = {
        e["name"]: e["value"]
        for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    given = kueue.parse_classes(env[kueue.CLASSES_ENV])  # what the operator will read
    assert [(c.name, c.min_priority) for c in given] == [("batch", -1000), ("prod", 100)]
    # off by default: no Kueue objects (the chart installs without Kueue's CRDs)
    default = rendered(VALUES["default"], "1.33", tmp_path)
    assert not [o for o in default if o["kind"] == kueue.KIND]
    operator = next(o for o in default if o["kind"] == "Deployment")["spec"]["template"]["spec"]
    assert kueue.CLASSES_ENV not in {e["name"] for e in operator["containers"][0]["env"]}


def test_documented_class_shape_refuses_what_kueue_would(tmp_path) -> None:
    good = kueue.manifest(kueue.WorkloadClass(name="a", value=1, minPriority=0))
    jsonschema.validate(good, WORKLOAD_PRIORITY_CLASS)
    for broken in ({**good, "value": "high"}, {**good, "metadata": {"name": "a", "namespace": "x"}},
                   {**good, "minPriority": 0}):  # fmt: skip
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(broken, WORKLOAD_PRIORITY_CLASS)


@pytest.mark.parametrize("name", sorted(VALUES))
def test_rbac_is_namespaced_and_wildcard_free(name, tmp_path) -> None:
    objects = rendered(VALUES[name], "1.33", tmp_path)
    watched = VALUES[name].get("operator", {}).get("watchNamespaces") or ["deepyard"]
    roles = [o for o in objects if o["kind"] in ("Role", "ClusterRole")]
    for role in roles:
        for rule in role["rules"]:
            for key in ("apiGroups", "resources", "verbs"):
                assert "*" not in rule.get(key, []), (role["metadata"]["name"], rule)
            assert "nonResourceURLs" not in rule and "escalate" not in rule["verbs"]
            assert not {"bind", "impersonate"} & set(rule["verbs"])
    # nothing cluster-wide: kopf runs with scanning disabled (see deepyard_operator.handlers)
    assert not [o for o in objects if o["kind"] in ("ClusterRole", "ClusterRoleBinding")]
    assert sorted(r["metadata"]["namespace"] for r in roles) == sorted(watched)
    for binding in (o for o in objects if o["kind"] == "RoleBinding"):
        assert binding["roleRef"]["kind"] == "Role"
    deployment = next(o for o in objects if o["kind"] == "Deployment")
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert [a.removeprefix("--namespace=") for a in args if a.startswith("--namespace")] == watched


def test_chart_ships_the_alerts_dashboards_and_generated_crds(tmp_path) -> None:
    objects = rendered(VALUES["default"], "1.33", tmp_path)
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for obj in objects:
        by_kind.setdefault(obj["kind"], []).append(obj)
    (rule,) = by_kind["PrometheusRule"]
    assert rule["spec"] == yaml.safe_load((CHART / "alerts" / "deepyard-rules.yaml").read_text())
    dashboards = {
        key: json.loads(value)
        for cm in by_kind["ConfigMap"]
        if cm["metadata"]["labels"].get("grafana_dashboard") == "1"
        for key, value in cm["data"].items()
    }
    assert dashboards == {
        f"deepyard-{path.stem}.json": json.loads(path.read_text())
        for path in (CHART / "dashboards").glob("*.json")
    }
    (monitor,) = by_kind["PodMonitor"]
    ports = [e["port"] for e in monitor["spec"]["podMetricsEndpoints"]]
    assert ports == ["job-metrics", "metrics"] and monitor["spec"]["namespaceSelector"]
    crds = {o["spec"]["names"]["kind"]: o for o in by_kind["CustomResourceDefinition"]}
    assert crds == {TRAINJOB: crd.definition(TRAINJOB), SWEEP: crd.definition(SWEEP)}, (
        "charts/deepyard/crds/ is stale: regenerate it with "
        "`deepyard k8s crds --out charts/deepyard/crds`"
    )


@pytest.mark.parametrize("spec", ["examples/digits_cnn.yaml", "sweeps/digits_sweep.yaml"])
def test_pod_monitor_finds_every_driver(spec, tmp_path) -> None:
    """A TrainJob's driver and a Sweep's (which serves its trials' series too) listen on
    the head pod's job-metrics port, which the PodMonitor selects and scrapes."""
    from deepyard.k8s.render import render

    objects = rendered(VALUES["default"], "1.33", tmp_path)
    (monitor,) = [o for o in objects if o["kind"] == "PodMonitor"]
    rayjob = render(REPO / "jobs" / spec, placement={"image": "registry.example/dy:1"})[-1]
    head = rayjob["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= head["metadata"]["labels"].items()
    ports = {p["name"] for p in head["spec"]["containers"][0]["ports"]}
    assert {e["port"] for e in monitor["spec"]["podMetricsEndpoints"]} <= ports


def test_monitoring_can_be_left_out(tmp_path) -> None:
    kinds = {o["kind"] for o in rendered(VALUES["no-monitoring"], "1.33", tmp_path)}
    assert not {"PodMonitor", "PrometheusRule", "ServiceAccount"} & kinds
