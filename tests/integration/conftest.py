"""One local Ray for the whole integration session (Ray start-up dominates test time)."""

from __future__ import annotations

import json
import logging
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from deepyard import spec as specs
from deepyard.data import resolve_sources
from deepyard.spec import JobSpec
from deepyard.train.loop import Sources

EXAMPLES = Path(__file__).resolve().parents[2] / "jobs" / "examples"
DigitsJob = Callable[..., tuple[JobSpec, Sources]]


@pytest.fixture(scope="session")
def ray_session(dataset_cache: Path) -> Iterator[None]:
    import ray

    # 2 GPUs declared, none present: Ray hands out GPU ids all the same, which is what the
    # GPU placement tests check (jobs without gpus_per_worker never see them).
    ray.init(
        address="local",
        num_cpus=4,
        num_gpus=2,
        include_dashboard=False,
        logging_level=logging.WARNING,
    )
    try:
        yield
    finally:
        ray.shutdown()


@pytest.fixture
def digits_job(tmp_path: Path) -> DigitsJob:
    """The digits example with `--set`-style overrides, writing under tmp_path."""

    def make(*overrides: str) -> tuple[JobSpec, Sources]:
        spec = specs.load(EXAMPLES / "digits_cnn.yaml", [f"output_dir={tmp_path}", *overrides])
        return spec, Sources(*resolve_sources(spec.data))

    return make


RunJson = Callable[..., tuple[dict[str, Any], subprocess.CompletedProcess[str]]]


@pytest.fixture
def run_json(tmp_path: Path) -> RunJson:
    """Run a deepyard command that prints one JSON summary line on stdout (runs go under
    tmp_path); assert it succeeded and return (summary, completed process)."""

    def run(*command: str, timeout: int = 360) -> tuple[dict[str, Any], Any]:
        done = subprocess.run(
            [*command, "--json", "--set", f"output_dir={tmp_path}"],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        lines = [line for line in done.stdout.splitlines() if line.strip()]
        assert len(lines) == 1, done.stdout[-2000:]  # rank 0 alone reports, nothing else
        return json.loads(lines[0]), done

    return run
