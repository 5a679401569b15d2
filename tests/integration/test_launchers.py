"""The same job through the other launchers: torchrun without Ray, and an existing Ray."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from deepyard.testing.torchrun import command, execute

EXAMPLES = Path(__file__).resolve().parents[2] / "jobs" / "examples"
pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(400)]
OVERRIDES = ["training.epochs=null", "training.max_steps=40"]
SHORT = [arg for value in OVERRIDES for arg in ("--set", value)]


def test_torchrun_runs_the_same_loop_without_ray(tmp_path: Path) -> None:
    run = execute(command(EXAMPLES / "digits_cnn.yaml", tmp_path, *OVERRIDES), timeout=360)
    assert run.code == 0, run.stderr[-3000:]
    lines = [line for line in run.stdout.splitlines() if line.strip()]
    assert len(lines) == 1, run.stdout[-2000:]  # rank 0 alone reports, nothing else
    summary = run.summary
    assert summary["status"] == "succeeded" and summary["steps"] == 40
    assert summary["samples"] == 40 * 64  # 2 ranks x 32
    assert summary["eval"]["num_samples"] == 360
    assert (run.run_dir / "history.parquet").is_file()


@pytest.fixture
def ray_cluster() -> Iterator[str]:
    """A separate Ray head, as a user's running cluster (on this machine); stopped by its handle."""
    from ray.cluster_utils import Cluster

    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 2, "include_dashboard": False},
    )
    try:
        yield cluster.address
    finally:
        cluster.shutdown()


def test_run_joins_an_existing_ray_with_address(run_json, ray_cluster: str) -> None:
    summary, _ = run_json(
        sys.executable,
        "-m",
        "deepyard.cli.main",
        "run",
        str(EXAMPLES / "digits_cnn.yaml"),
        "--address",
        ray_cluster,
        *SHORT,
    )
    assert summary["status"] == "succeeded" and summary["steps"] == 40
    assert "workers_started" in summary["startup_s"]
