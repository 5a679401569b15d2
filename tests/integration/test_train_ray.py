"""Real DeepSpeed training on real Ray workers (2 ranks, gloo) over real Parquet data."""

from __future__ import annotations

import os
import signal
import time
from typing import Any

import numpy as np
import psutil
import pytest

from deepyard.data.parquet import write_split
from deepyard.errors import TrainingError
from deepyard.launch.local import run_job
from deepyard.launch.workers import WorkerGroup, WorkerLost
from deepyard.train.loop import Sources
from deepyard.train.plan import AttemptPlan

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


def losses(events: list[dict[str, Any]]) -> list[float]:
    return [e["loss"] for e in events if e["type"] == "step"]


@pytest.mark.parametrize("stage", [0, 1, 2, 3])
def test_every_zero_stage_trains_on_two_workers(ray_session, digits_job, stage: int) -> None:
    spec, sources = digits_job(
        f"parallelism.zero_stage={stage}", "training.epochs=null", "training.max_steps=60"
    )
    events: list[dict[str, Any]] = []
    summary = run_job(spec, sources, events.append, print)

    curve = losses(events)
    assert len(curve) == 60
    assert np.mean(curve[-10:]) < 0.5 * np.mean(curve[:10]), curve
    assert summary["steps"] == 60
    assert summary["eval"]["num_samples"] == 360  # the whole test split, gathered over ranks
    assert summary["eval"]["accuracy"] > 0.8


def test_worker_error_fails_the_job_with_that_error(ray_session, digits_job, tmp_path) -> None:
    """A model that cannot take the data: the worker's own error, once, not a Ray dump."""
    flat = tmp_path / "flat.parquet"
    rng = np.random.default_rng(0)
    write_split(flat, rng.random((64, 20), dtype=np.float32), rng.integers(0, 3, 64), 3)
    spec, _ = digits_job()
    with pytest.raises(TrainingError) as caught:
        run_job(spec, Sources(str(flat), None), lambda e: None, print)
    message = str(caught.value)
    assert "ValueError: model cnn needs image input" in message
    assert message.count("needs image input") == 1


def test_killed_worker_stops_the_job_instead_of_hanging(ray_session, digits_job) -> None:
    """SIGKILL one rank mid-run: the job fails within seconds and no rank is left behind."""
    spec, sources = digits_job("training.epochs=null", "training.max_steps=100000")
    killed: list[float] = []

    def on_event(event: dict[str, Any]) -> None:
        if event["type"] == "step" and event["step"] >= 3 and not killed:
            os.kill(group.pids[1], signal.SIGKILL)
            killed.append(time.monotonic())

    group = WorkerGroup(spec, on_event, print)
    try:
        group.start()
        with pytest.raises(WorkerLost, match=r"rank 1.*died"):
            group.run(sources, AttemptPlan())
        assert time.monotonic() - killed[0] < 60
    finally:
        pids = list(group.pids)
        group.stop()
    _, alive = psutil.wait_procs([psutil.Process(p) for p in pids if psutil.pid_exists(p)], 30)
    assert not alive, f"worker processes left running: {alive}"
