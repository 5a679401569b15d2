"""One local Ray for the whole integration session (Ray start-up dominates test time)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path

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

    ray.init(num_cpus=4, include_dashboard=False, logging_level=logging.WARNING)
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
