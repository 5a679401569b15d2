"""The same job through the other launchers: torchrun without Ray, and an existing Ray."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from deepyard.train.dist import free_port

EXAMPLES = Path(__file__).resolve().parents[2] / "jobs" / "examples"
pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(400)]
SHORT = ["--set", "training.epochs=null", "--set", "training.max_steps=40"]


def test_torchrun_runs_the_same_loop_without_ray(tmp_path: Path) -> None:
    torchrun = Path(sys.executable).with_name("torchrun")
    done = subprocess.run(
        [
            str(torchrun),
            "--nproc-per-node",
            "2",
            "--master-addr",
            "127.0.0.1",
            "--master-port",
            str(free_port()),
            "-m",
            "deepyard.train",
            "--spec",
            str(EXAMPLES / "digits_cnn.yaml"),
            "--json",
            "--set",
            f"output_dir={tmp_path}",
            *SHORT,
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    assert len(lines) == 1  # rank 0 alone reports
    summary = json.loads(lines[0])
    assert summary["status"] == "succeeded" and summary["steps"] == 40
    assert summary["samples"] == 40 * 64  # 2 ranks x 32
    assert summary["eval"]["num_samples"] == 360
    assert (Path(summary["run_dir"]) / "history.parquet").is_file()


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


def test_run_joins_an_existing_ray_with_address(tmp_path: Path, ray_cluster: str) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "deepyard.cli.main",
            "run",
            str(EXAMPLES / "digits_cnn.yaml"),
            "--json",
            "--address",
            ray_cluster,
            "--set",
            f"output_dir={tmp_path}",
            *SHORT,
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout)
    assert summary["status"] == "succeeded" and summary["steps"] == 40
    assert "workers_started" in summary["startup_s"]
