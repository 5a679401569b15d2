"""The sweep's one /metrics: its own gauges plus every announced trial's series, scraped
over real HTTP from real exporters, merged into an exposition Prometheus accepts (one
family per name)."""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from deepyard import spec as specs
from deepyard.sweep import metrics
from deepyard.telemetry.exporter import MetricsExporter

EXAMPLE = Path(__file__).resolve().parents[3] / "jobs" / "examples" / "digits_cnn.yaml"
STATUS = {
    "metric": "accuracy",
    "trials": [
        {"state": "running"},
        {"state": "running"},
        {"state": "finished"},
        {"state": "failed"},
        {"state": "pending"},
    ],
    "best": {"id": "t3", "accuracy": 0.91},
}


def step(n: int) -> dict[str, Any]:
    return {"type": "step", "step": n, "loss": 1.0 / n, "lr": 0.1, "step_time_s": 0.1,
            "data_wait_s": 0.0, "samples_per_s": 10.0, "t": 1.0}  # fmt: skip


@pytest.fixture
def trials(tmp_path: Path) -> Iterator[dict[str, str]]:
    """Two trials' real exporters on loopback, at steps 5 and 9."""
    started = []
    for run, n in (("r1", 5), ("r2", 9)):
        spec = specs.load(EXAMPLE, [f"telemetry.targets_dir={tmp_path}"])
        exporter = MetricsExporter(spec, run, submitted_at=0.0, spec_hash="abc")
        exporter.start()
        exporter.observe({"type": "start", "attempt": 1})
        exporter.observe(step(n))
        started.append((run, exporter))
    yield {f"trial-{run}": exporter.address for run, exporter in started}
    for _, exporter in started:
        exporter.stop("succeeded")


def scrape(address: str) -> str:
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=5) as answer:
        return str(answer.read().decode())


def test_one_endpoint_serves_the_sweep_and_its_trials(trials) -> None:
    endpoints = {**trials, "gone": "127.0.0.1:9"}  # a trial that ended: skipped
    server = metrics.SweepMetricsServer(
        metrics.SweepCollector("digits-sweep", lambda: STATUS, lambda: endpoints)
    )
    where = server.start("127.0.0.1", 0)
    try:
        text = scrape(where)
    finally:
        server.stop()
    assert text.count("# TYPE deepyard_train_step gauge") == 1  # merged, not repeated
    assert text.count("# TYPE deepyard_sweep_trials gauge") == 1
    samples = [s for f in text_string_to_metric_families(text) for s in f.samples]
    steps = {s.labels["run"]: s.value for s in samples if s.name == "deepyard_train_step"}
    assert steps == {"r1": 5, "r2": 9}
    states = {s.labels["state"]: s.value for s in samples if s.name == "deepyard_sweep_trials"}
    assert (states["running"], states["finished"], states["failed"]) == (2, 1, 1)
    assert states["paused"] == 0  # every state is a series, so a drop to 0 is seen
    (best,) = [s for s in samples if s.name == "deepyard_sweep_best_metric"]
    assert best.labels == {"job": "digits-sweep", "metric": "accuracy"} and best.value == 0.91


def test_before_any_trial_reports_only_the_counts() -> None:
    families = metrics.sweep_families("s", {})
    assert [len(f.samples) for f in families] == [len(metrics.STATES), 0]


def test_the_directory_forgets_a_retired_trial() -> None:
    directory = metrics.TrialEndpoints()
    directory.announce("t1", "10.0.0.5:40211")
    directory.announce("t2", "10.0.0.6:38817")
    directory.retire("t1")
    directory.retire("never-announced")
    assert directory.all() == {"t2": "10.0.0.6:38817"}


def test_a_busy_directory_still_leaves_the_sweeps_own_series() -> None:
    def busy() -> dict[str, str]:
        raise TimeoutError("ray.get timed out")

    collected = list(metrics.SweepCollector("s", lambda: STATUS, busy).collect())
    assert [f.name for f in collected] == [metrics.TRIALS, metrics.BEST]
