"""Kubernetes test helpers: KubeRay's real CRDs (from shared/, skipped with the reason when
absent) and TrainJob manifests built from the example jobs."""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[3]
KUBERAY = Path(
    os.environ.get("DEEPYARD_KUBERAY_SCHEMAS", REPO.parent / "shared/schemas/kuberay-v1.7.0")
)
# digits_cnn first: tests take EXAMPLE_JOBS[0] as their base job (epochs, batch_size, 2
# workers), whatever examples sort before it by name.
EXAMPLE_JOBS = sorted(
    (REPO / "jobs" / "examples").glob("*.yaml"), key=lambda p: (p.name != "digits_cnn.yaml", p.name)
)
IMAGE = "registry.example/deepyard:0.1.0"


@pytest.fixture(scope="session")
def kuberay_crds() -> dict[str, dict[str, Any]]:
    """KubeRay v1.7.0's RayJob and RayCluster CRDs, by kind."""
    from deepyard.testing.k8s_schema import load_crd

    if not (KUBERAY / "ray.io_rayjobs.yaml").is_file():
        pytest.skip(f"KubeRay v1.7.0 CRDs not found in {KUBERAY} (set DEEPYARD_KUBERAY_SCHEMAS)")
    return {
        "RayJob": load_crd(KUBERAY / "ray.io_rayjobs.yaml"),
        "RayCluster": load_crd(KUBERAY / "ray.io_rayclusters.yaml"),
    }


def trainjob(job_file: Path, **kubernetes: Any) -> dict[str, Any]:
    """A TrainJob manifest whose spec is `job_file` plus `kubernetes:` placement."""
    spec = yaml.safe_load(job_file.read_text())
    spec["kubernetes"] = {"image": IMAGE, **kubernetes}
    return {
        "apiVersion": "deepyard.dev/v1alpha1",
        "kind": "TrainJob",
        "metadata": {"name": spec["name"], "namespace": "ml"},
        "spec": spec,
    }


def changed(manifest: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A copy with `spec.<path>` set (None deletes it)."""
    out = copy.deepcopy(manifest)
    node = out["spec"]
    parts = path.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    if value is None:
        node.pop(parts[-1], None)
    else:
        node[parts[-1]] = value
    return out
