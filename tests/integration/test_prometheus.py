"""A real Prometheus server (Debian's `prometheus`) scrapes a 2-worker job through the
file_sd target file the job writes; its query API must give the job's throughput,
step-time quantiles and goodput with the right labels, agreeing with the job's own
summary, and every metric the dashboards and alert rules use must have been scraped."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from deepyard.telemetry import assets
from deepyard.telemetry.catalog import BY_NAME, series_names
from deepyard.train.dist import free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]
EXAMPLE = Path(__file__).resolve().parents[2] / "jobs" / "examples" / "digits_cnn.yaml"


class Prometheus:
    def __init__(self, url: str) -> None:
        self.url = url

    def get(self, path: str, **params: Any) -> Any:
        query = urllib.parse.urlencode(params, doseq=True)
        with urllib.request.urlopen(f"{self.url}{path}?{query}", timeout=10) as answer:
            body = json.loads(answer.read())
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str, at: float) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.get("/api/v1/query", query=expr, time=at)["result"]
        return result

    def value(self, expr: str, at: float) -> float:
        result = self.query(expr, at)
        assert len(result) == 1, (expr, result)
        return float(result[0]["value"][1])


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Prometheus, Path]]:
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.skip("Debian's prometheus is not installed (scripts/setup.sh installs it)")
    root = tmp_path_factory.mktemp("prometheus")
    targets = root / "targets"
    targets.mkdir()
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "900ms"},
        "scrape_configs": [
            {
                "job_name": "deepyard",
                "honor_labels": True,  # keep deepyard's own `job` label (the job's name)
                "file_sd_configs": [{"files": [str(targets / "*.json")], "refresh_interval": "1s"}],
            }
        ],
    }
    (root / "prometheus.yml").write_text(json.dumps(config))
    port = free_port()
    server = subprocess.Popen(
        [
            binary,
            f"--config.file={root / 'prometheus.yml'}",
            f"--storage.tsdb.path={root / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                with urllib.request.urlopen(f"{url}/-/ready", timeout=1):
                    break
            except OSError:
                time.sleep(0.2)
        yield Prometheus(url), targets
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.fixture(scope="module")
def scraped_job(prometheus: tuple[Prometheus, Path], tmp_path_factory) -> dict[str, Any]:
    """A 2-worker job with a checkpoint, a crash of rank 1 and a restart, scraped every
    second; returns its summary."""
    _, targets = prometheus
    out = tmp_path_factory.mktemp("job")
    overrides = [
        f"output_dir={out}",
        "training.epochs=null",
        "training.max_steps=240",
        "training.eval_every_steps=80",
        "checkpoint.every_steps=60",
        "checkpoint.every_minutes=30",  # exported as the interval the overdue alert uses
        "failure.max_restarts=1",
        "faults=[{kind: crash, rank: 1, step: 130}]",
        f"telemetry.targets_dir={targets}",
        "telemetry.linger_s=3",  # the last values get scraped
        "telemetry.peak_flops_per_device=1e11",  # a made-up peak, so MFU is exported on CPU
    ]
    command = [sys.executable, "-m", "deepyard.cli.main", "run", str(EXAMPLE), "--json"]
    for item in overrides:
        command += ["--set", item]
    done = subprocess.run(command, capture_output=True, text=True, timeout=420)
    assert done.returncode == 0, done.stderr[-3000:]
    summary: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["attempts"] == 2
    assert list(targets.glob("*.json")) == []  # the target file goes with the job
    return summary


def test_throughput_quantiles_and_goodput_agree_with_the_summary(
    prometheus: tuple[Prometheus, Path], scraped_job: dict[str, Any]
) -> None:
    prom, _ = prometheus
    at = time.time()
    run = scraped_job["run_id"]
    sel = f'job="digits-cnn",run="{run}",rank="0"'
    window = "[10m]"
    # Totals of the final attempt, as last scraped: samples over step time.
    samples = prom.value(
        f"last_over_time(deepyard_train_samples_total{{{sel},attempt='2'}}{window})", at
    )
    busy = prom.value(
        f"last_over_time(deepyard_train_step_duration_seconds_sum{{{sel},attempt='2'}}{window})",
        at,
    )
    attempt2 = prom.value(
        f"last_over_time(deepyard_train_steps_total{{{sel},attempt='2'}}{window})", at
    )
    assert attempt2 == scraped_job["steps_this_attempt"]
    rate = (
        prom.value(f"last_over_time(deepyard_train_samples_total{{{sel},attempt='2'}}{window})", at)
        / busy
    )
    assert rate == pytest.approx(scraped_job["samples_per_s"], rel=0.10)
    assert samples == attempt2 * 64

    quantiles = [
        prom.value(
            f"histogram_quantile({q}, sum by (le) (last_over_time("
            f"deepyard_train_step_duration_seconds_bucket{{{sel},attempt='2'}}{window})))",
            at,
        )
        for q in (0.5, 0.95, 0.99)
    ]
    assert 0 < quantiles[0] <= quantiles[1] <= quantiles[2] < 10

    goodput = prom.value(f'last_over_time(deepyard_job_goodput_ratio{{run="{run}"}}{window})', at)
    assert 0 < goodput <= 1
    assert goodput == pytest.approx(scraped_job["goodput"], abs=0.1)
    mfu = prom.value(
        f"last_over_time(deepyard_train_model_flops_utilization_ratio{{{sel},attempt='2'}}{window})",
        at,
    )
    assert mfu > 0

    counts = f'deepyard_train_step_duration_seconds_count{{run="{run}"}}'
    ranks = prom.query(f"count by (rank) (last_over_time({counts}{window}))", at)
    assert sorted(r["metric"]["rank"] for r in ranks) == ["0", "1"]
    redone = prom.value(
        f'last_over_time(deepyard_job_steps_redone_total{{run="{run}"}}{window})', at
    )
    assert redone == scraped_job["recoveries"][0]["steps_redone"]
    state = prom.query(f'last_over_time(deepyard_job_state{{run="{run}"}}{window}) == 1', at)
    assert [s["metric"]["state"] for s in state] == ["succeeded"]


def test_every_metric_the_dashboards_and_alerts_use_was_scraped(
    prometheus: tuple[Prometheus, Path], scraped_job: dict[str, Any]
) -> None:
    prom, _ = prometheus
    seen = set(
        prom.get(
            "/api/v1/label/__name__/values",
            **{"match[]": f'{{run="{scraped_job["run_id"]}"}}'},
            start=time.time() - 900,
        )
    )
    used = {name for expr in assets.all_expressions() for name in assets.metric_names(expr.expr)}
    assert used and used <= series_names()
    optional = {
        series
        for metric in BY_NAME.values()
        if metric.needs is not None
        for series in metric.series_names
    }
    missing = sorted(used - seen - optional)
    assert not missing, f"used by dashboards or alerts but never scraped: {missing}"
