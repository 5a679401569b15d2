"""The exporter as Prometheus sees it: scrape its real HTTP endpoint and parse the text."""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from deepyard import spec as specs
from deepyard.telemetry.catalog import CATALOGUE
from deepyard.telemetry.exporter import MetricsExporter

EXAMPLE = Path(__file__).resolve().parents[3] / "jobs" / "examples" / "digits_cnn.yaml"


def step(n: int, **extra: Any) -> dict[str, Any]:
    return {
        "type": "step",
        "step": n,
        "loss": 2.0 / n,
        "lr": 0.1,
        "step_time_s": 0.5,
        "forward_s": 0.1,
        "data_wait_s": 0.01,
        "samples_per_s": 128.0,
        "t": 1.0,
        **extra,
    }


def scrape(address: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=5) as answer:
        text = answer.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: dict, name: str, **labels: str) -> float:
    found = [v for (n, ls), v in samples.items() if n == name and set(labels.items()) <= set(ls)]
    assert len(found) == 1, (name, labels, found)
    return float(found[0])


@pytest.fixture
def exporter(tmp_path: Path):
    spec = specs.load(
        EXAMPLE,
        [f"telemetry.targets_dir={tmp_path}", "telemetry.peak_flops_per_device=1e9"],
    )
    exporter = MetricsExporter(spec, "r1", submitted_at=0.0, spec_hash="abc")
    yield exporter
    exporter.stop("succeeded")


def test_serves_the_catalogue_on_loopback_and_announces_itself(exporter, tmp_path: Path) -> None:
    address = exporter.start()
    assert address.startswith("127.0.0.1:")
    [target] = json.loads((tmp_path / "digits-cnn-r1.json").read_text())
    assert target["targets"] == [address]
    samples = scrape(address)
    assert value(samples, "deepyard_job_restarts_total", job="digits-cnn", run="r1") == 0
    assert value(samples, "deepyard_job_state", state="pending") == 1
    names = {name for name, _ in samples}
    assert names <= {s for m in CATALOGUE for s in (*m.series_names, f"{m.name}_created")}
    exporter.stop("succeeded")
    assert not (tmp_path / "digits-cnn-r1.json").exists()


def test_steps_ranks_attempts_goodput_and_mfu(exporter) -> None:
    address = exporter.start()
    exporter.observe({"type": "start", "attempt": 1, "flops_per_sample": 1e6, "peak_flops": 2e9})
    for n in (1, 2, 3):
        exporter.observe(step(n))
        exporter.observe(
            {"type": "rank_step", "rank": 1, "step": n, "step_time_s": 0.5, "data_wait_s": 0.2}
        )
    exporter.observe({"type": "attempt_failed", "cause": "worker_lost", "retry": True})
    exporter.observe({"type": "start", "attempt": 2, "flops_per_sample": 1e6, "peak_flops": 2e9})
    exporter.observe(step(3, loss=0.25))  # step 3 redone
    samples = scrape(address)

    # Earlier attempts' gauges are gone; their counters stay for rate().
    losses = [(ls, v) for (n, ls), v in samples.items() if n == "deepyard_train_loss"]
    assert losses == [
        ((("attempt", "2"), ("job", "digits-cnn"), ("rank", "0"), ("run", "r1")), 0.25)
    ]
    assert value(samples, "deepyard_train_steps_total", attempt="1", rank="1") == 3
    assert value(
        samples, "deepyard_data_wait_seconds_total", attempt="1", rank="1"
    ) == pytest.approx(0.6)
    assert value(samples, "deepyard_train_step_duration_seconds_count", attempt="1", rank="0") == 3
    assert (
        value(samples, "deepyard_train_forward_duration_seconds_count", attempt="2", rank="0") == 1
    )
    assert value(samples, "deepyard_job_failures_total", cause="worker_lost") == 1
    assert value(samples, "deepyard_job_restarts_total") == 1
    # 3 * 1e6 FLOPs * 128 samples/s against 2e9 peak
    assert value(samples, "deepyard_train_model_flops_utilization_ratio") == pytest.approx(0.192)
    # goodput: steps 1-3 count once (3 x 0.5 s), over the wall time since submission
    exporter.submitted_at = time.time() - 3.0
    assert exporter.goodput() == pytest.approx(0.5, rel=0.02)


def test_last_checkpoint_step_follows_saves_and_resumes(exporter) -> None:
    address = exporter.start()
    names = {name for name, _ in scrape(address)}
    assert "deepyard_checkpoint_last_step" not in names  # absent until a checkpoint exists
    exporter.observe({"type": "resumed", "step": 40, "restore_s": 1.5, "t": 1.0})
    assert value(scrape(address), "deepyard_checkpoint_last_step", job="digits-cnn") == 40
    saved = {"type": "checkpoint_saved", "write_s": 0.2, "size_bytes": 10, "t": 2.0}
    exporter.observe({**saved, "step": 60})
    samples = scrape(address)
    assert value(samples, "deepyard_checkpoint_last_step", job="digits-cnn", run="r1") == 60
    assert value(samples, "deepyard_checkpoint_saves_total") == 1


def test_a_language_models_mfu_comes_from_its_real_tokens(exporter) -> None:
    address = exporter.start()
    exporter.observe(
        {
            "type": "start",
            "attempt": 1,
            "flops_per_sample": 64 * 1e5,  # a full 64-token row; the batches are shorter
            "flops_per_token": 1e5,
            "peak_flops": 2e9,
        }
    )
    exporter.observe(step(1, tokens_per_s=3000.0))
    samples = scrape(address)
    assert value(samples, "deepyard_train_throughput_tokens_per_second") == 3000.0
    # 3 x 1e5 FLOPs x 3000 tokens/s against 2e9 peak (per full-length sample: 1.23)
    assert value(samples, "deepyard_train_achieved_flops_per_second") == pytest.approx(9e8)
    assert value(samples, "deepyard_train_model_flops_utilization_ratio") == pytest.approx(0.45)


def test_a_gans_own_losses_are_served_as_one_gauge_labelled_by_name(tmp_path: Path) -> None:
    """loss_d, loss_g, d_real and d_fake (the GAN task's step metrics) under
    `deepyard_train_step_metric{name=...}`, of the current attempt only; a classifier's
    scrape has no such series."""
    gan = specs.load(
        EXAMPLE,
        [f"telemetry.targets_dir={tmp_path}", "model.name=dcgan", "model.args={width: 8}"],
    )
    exporter = MetricsExporter(gan, "r2", submitted_at=0.0, spec_hash="abc")
    address = exporter.start()
    try:
        exporter.observe({"type": "start", "attempt": 1})
        exporter.observe(step(1, loss_d=1.25, loss_g=0.75, d_real=0.625, d_fake=0.375, loss=2.0))
        assert step_metrics(scrape(address)) == {
            "loss_d": ("1", "0", 1.25),
            "loss_g": ("1", "0", 0.75),
            "d_real": ("1", "0", 0.625),
            "d_fake": ("1", "0", 0.375),
        }
        exporter.observe({"type": "start", "attempt": 2})
        exporter.observe(step(2, loss_d=1.0, loss_g=0.5, d_real=0.5, d_fake=0.25, loss=1.5))
        assert step_metrics(scrape(address)) == {
            "loss_d": ("2", "0", 1.0),
            "loss_g": ("2", "0", 0.5),
            "d_real": ("2", "0", 0.5),
            "d_fake": ("2", "0", 0.25),
        }
    finally:
        exporter.stop("succeeded")


def step_metrics(samples: dict) -> dict[str, tuple[str, str, float]]:
    """deepyard_train_step_metric's series: name → (attempt, rank, value)."""
    found = {}
    for (metric, labels), v in samples.items():
        if metric == "deepyard_train_step_metric":
            label = dict(labels)
            assert label["name"] not in found, label  # one series per figure
            assert (label["job"], label["run"]) == ("digits-cnn", "r2")
            found[label["name"]] = (label["attempt"], label["rank"], v)
    return found


def test_a_classifier_serves_no_step_metric(exporter) -> None:
    address = exporter.start()
    exporter.observe({"type": "start", "attempt": 1})
    exporter.observe(step(1, loss_d=9.0))  # not one of the classification task's figures
    names = {name for name, _ in scrape(address)}
    assert "deepyard_train_loss" in names
    assert "deepyard_train_step_metric" not in names
