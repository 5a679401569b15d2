"""End to end on a real Kubernetes cluster (kind or k3s) with KubeRay installed: the chart
installs, a TrainJob trains to Succeeded through a RayJob, the TrainJob's status follows,
and deleting it deletes the RayJob (garbage collection through owner references).

Opt-in: set DEEPYARD_E2E_KUBE_CONTEXT to a kubeconfig context (a throwaway cluster: the test
installs the chart and creates a namespace) and DEEPYARD_E2E_IMAGE to an image with deepyard
installed that the cluster can pull (for kind: `kind load docker-image`). docs/operator-guide.md
("Run the end-to-end suite") lists the steps. Skipped otherwise, with the reason printed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
CONTEXT = os.environ.get("DEEPYARD_E2E_KUBE_CONTEXT")
IMAGE = os.environ.get("DEEPYARD_E2E_IMAGE")
NAMESPACE = os.environ.get("DEEPYARD_E2E_NAMESPACE", "deepyard-e2e")
TIMEOUT_S = float(os.environ.get("DEEPYARD_E2E_TIMEOUT_S", "900"))


def _tool(name: str) -> str | None:
    cache = Path(os.environ.get("DEEPYARD_CACHE", Path.home() / ".cache" / "deepyard"))
    for candidate in (cache / "bin" / name, Path.home() / ".cache/deepyard/bin" / name):
        if candidate.is_file():
            return str(candidate)
    return shutil.which(name)


KUBECTL, HELM = _tool("kubectl"), _tool("helm")
REASON = (
    "end-to-end Kubernetes suite: set DEEPYARD_E2E_KUBE_CONTEXT (a kind/k3s cluster with "
    "KubeRay) and DEEPYARD_E2E_IMAGE (an image with deepyard) to run it; see "
    "docs/operator-guide.md"
    if not (CONTEXT and IMAGE)
    else "kubectl/helm not found: run scripts/setup.sh"
)
pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not (CONTEXT and IMAGE and KUBECTL and HELM), reason=REASON),
]


def kubectl(*args: str, check: bool = True) -> str:
    assert KUBECTL and CONTEXT
    done = subprocess.run(
        [KUBECTL, "--context", CONTEXT, "-n", NAMESPACE, *args],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if check and done.returncode:
        raise AssertionError(f"kubectl {' '.join(args)}: {done.stderr}")
    return done.stdout


def get(kind: str, name: str) -> dict[str, Any] | None:
    text = kubectl("get", kind, name, "-o", "json", check=False)
    return json.loads(text) if text else None


@pytest.fixture(scope="module")
def installed() -> Any:
    assert HELM and CONTEXT
    kubectl("create", "namespace", NAMESPACE, check=False)
    subprocess.run(
        [HELM, "--kube-context", CONTEXT, "upgrade", "--install", "deepyard-e2e",
         str(REPO / "charts" / "deepyard"), "-n", NAMESPACE, "--wait",
         "--set", f"operator.image.repository={IMAGE.rsplit(':', 1)[0]}",  # type: ignore[union-attr]
         "--set", f"operator.image.tag={IMAGE.rsplit(':', 1)[-1]}",  # type: ignore[union-attr]
         "--set", f"jobs.image={IMAGE}",
         "--set", "monitoring.podMonitor.enabled=false",
         "--set", "monitoring.prometheusRule.enabled=false"],
        check=True, timeout=300,
    )  # fmt: skip
    yield
    subprocess.run(
        [HELM, "--kube-context", CONTEXT, "uninstall", "deepyard-e2e", "-n", NAMESPACE],
        check=False,
        timeout=300,
    )


def wait_for(check: Any, what: str, timeout: float = TIMEOUT_S) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(5)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def test_trainjob_trains_and_cleans_up(installed: Any, tmp_path: Path) -> None:
    from deepyard.k8s.render import dump_all, resource

    manifest = resource(
        REPO / "jobs" / "examples" / "digits_cnn.yaml",
        ["training.epochs=1"],
        {"namespace": NAMESPACE, "image": IMAGE, "memory_per_worker": "2Gi", "head_memory": "2Gi"},
    )
    path = tmp_path / "trainjob.yaml"
    path.write_text(dump_all([manifest]))
    kubectl("apply", "-f", str(path))
    name = manifest["metadata"]["name"]
    rayjob = wait_for(lambda: get("rayjob", name), "the RayJob")
    assert rayjob["metadata"]["ownerReferences"][0]["kind"] == "TrainJob"
    done = wait_for(
        lambda: (
            (get("trainjob", name) or {}).get("status", {}).get("phase") in ("Succeeded", "Failed")
            and get("trainjob", name)
        ),
        "the TrainJob to finish",
    )
    assert done["status"]["phase"] == "Succeeded", done["status"]
    assert done["status"]["attempts"] == 1
    assert name in kubectl("get", "trainjobs")  # printer columns render
    kubectl("delete", "trainjob", name, "--wait=true")
    wait_for(lambda: get("rayjob", name) is None, "the RayJob to be deleted", timeout=120)


def test_api_server_rejects_an_invalid_trainjob_with_the_cli_message(
    installed: Any, tmp_path: Path
) -> None:
    import yaml

    from deepyard.k8s.render import resource

    manifest = resource(REPO / "jobs" / "examples" / "digits_cnn.yaml", [], {"image": IMAGE})
    manifest["metadata"]["namespace"] = NAMESPACE
    manifest["spec"]["training"]["max_steps"] = 10  # with epochs: the CLI refuses both
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(manifest))
    assert KUBECTL and CONTEXT
    done = subprocess.run(
        [KUBECTL, "--context", CONTEXT, "apply", "-f", str(path)], capture_output=True, text=True
    )
    assert done.returncode != 0
    assert "training.max_steps and training.epochs are alternatives; keep one" in done.stderr


def test_api_server_refuses_an_edit_of_a_trainjobs_spec(installed: Any, tmp_path: Path) -> None:
    """The CRDs' transition rule (and its CEL cost) as a real API server judges them; the
    queue name keeps the RayJob suspended (no Kueue here), so nothing trains."""
    import yaml

    from deepyard.k8s.render import resource

    placement = {"image": IMAGE, "namespace": NAMESPACE, "queue_name": "nowhere"}
    manifest = resource(REPO / "jobs" / "examples" / "digits_cnn.yaml", [], placement)
    manifest["metadata"]["name"] = "digits-cnn-immutable"
    manifest["spec"]["name"] = "digits-cnn-immutable"
    path = tmp_path / "trainjob.yaml"
    path.write_text(yaml.safe_dump(manifest))
    kubectl("apply", "-f", str(path))
    try:
        manifest["spec"]["training"]["epochs"] = 2
        path.write_text(yaml.safe_dump(manifest))
        assert KUBECTL and CONTEXT
        done = subprocess.run(
            [KUBECTL, "--context", CONTEXT, "apply", "-f", str(path)],
            capture_output=True,
            text=True,
        )
        assert done.returncode != 0
        assert "the spec is fixed once the job exists" in done.stderr
        kubectl("label", "trainjob", "digits-cnn-immutable", "team=a")  # metadata may change
    finally:
        kubectl("delete", "trainjob", "digits-cnn-immutable", "--wait=true", check=False)
