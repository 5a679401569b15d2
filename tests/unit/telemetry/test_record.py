"""Run records: summary.json and history.parquet of a run, and its start-up phases."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from deepyard.telemetry import RunRecorder, new_run_id
from deepyard.telemetry.record import HISTORY_COLUMNS

T0 = 1_700_000_000.0


def step(n: int, t: float) -> dict:
    return {
        "type": "step",
        "step": n,
        "epoch": 0,
        "loss": 2.0 / n,
        "lr": 0.001 * n,
        "samples_per_s": 100.0 + n,
        "step_time_s": 0.5,
        "t": t,
    }


@pytest.fixture
def recorder(tmp_path: Path) -> RunRecorder:
    return RunRecorder(tmp_path / "runs" / "tiny" / "r1", "tiny", "r1", started_at=T0)


def test_summary_and_history_of_a_finished_run(recorder: RunRecorder) -> None:
    # Phases arrive out of order (driver and workers report separately).
    recorder.add({"type": "phase", "name": "engine_ready", "t": T0 + 6.0})
    recorder.phase("spec_loaded", T0 + 1.0)
    recorder.add({"type": "phase", "name": "process_group", "t": T0 + 3.5})
    recorder.add({"type": "start", "total_steps": 3, "num_parameters": 1234})
    for n in (1, 2, 3):
        recorder.add(step(n, T0 + 6.5 + n))
    recorder.add({"type": "eval", "step": 3, "metrics": {"accuracy": 0.75}, "t": T0 + 10})

    summary = recorder.finish({"steps": 3, "final_loss": 0.66}, "succeeded")

    on_disk = json.loads((recorder.run_dir / "summary.json").read_text())
    assert on_disk == summary
    assert (summary["job"], summary["run_id"], summary["status"]) == ("tiny", "r1", "succeeded")
    assert summary["steps"] == 3 and summary["final_loss"] == 0.66
    assert summary["num_parameters"] == 1234
    assert summary["time_to_first_step_s"] == pytest.approx(7.5)
    assert list(summary["startup_s"]) == [
        "spec_loaded",
        "process_group",
        "engine_ready",
        "first_step",
    ]
    assert list(summary["startup_s"].values()) == pytest.approx([1.0, 2.5, 2.5, 1.5])
    assert "error" not in summary

    history = pq.read_table(recorder.run_dir / "history.parquet")
    assert history.column_names == list(HISTORY_COLUMNS)
    assert history.column("step").to_pylist() == [1, 2, 3]
    assert history.column("loss").to_pylist() == pytest.approx([2.0, 1.0, 2.0 / 3])
    evals = json.loads((recorder.run_dir / "evals.json").read_text())
    assert evals == [{"step": 3, "accuracy": 0.75}]


def test_a_phase_keeps_its_first_time(recorder: RunRecorder) -> None:
    recorder.phase("data_loaded", T0 + 2.0)
    recorder.phase("data_loaded", T0 + 9.0)
    assert recorder.startup() == {"data_loaded": 2.0}


def test_a_failed_run_without_steps(recorder: RunRecorder) -> None:
    summary = recorder.finish(None, "failed", "training failed on worker rank 1: boom")
    assert summary["status"] == "failed"
    assert summary["error"] == "training failed on worker rank 1: boom"
    assert summary["time_to_first_step_s"] is None
    assert json.loads((recorder.run_dir / "summary.json").read_text())["status"] == "failed"
    assert pq.read_table(recorder.run_dir / "history.parquet").num_rows == 0
    assert not (recorder.run_dir / "evals.json").exists()
    assert not list(recorder.run_dir.glob("*.tmp"))


def test_resolved_spec_is_written_with_its_hash(recorder: RunRecorder) -> None:
    recorder.write_spec({"name": "tiny", "model": {"name": "mlp"}}, "abc123def456")
    text = (recorder.run_dir / "spec.yaml").read_text()
    assert text.startswith("# resolved job spec, hash abc123def456\n")
    assert yaml.safe_load(text) == {"name": "tiny", "model": {"name": "mlp"}}


def test_run_ids_are_timestamped_and_distinct() -> None:
    ids = {new_run_id() for _ in range(20)}
    assert len(ids) > 1
    assert all(re.fullmatch(r"\d{8}-\d{6}-[0-9a-f]{4}", i) for i in ids)


def test_a_language_model_counts_flops_per_real_token(recorder: RunRecorder) -> None:
    """Padded rows differ in length: MFU is FLOPs per token x real tokens/s, not the cost
    of a full-length row x samples/s (which would count the padding)."""
    recorder.add(
        {"type": "start", "flops_per_sample": 64 * 5e6, "flops_per_token": 5e6, "peak_flops": 1e12}
    )
    summary = recorder.finish({"samples_per_s": 100.0, "tokens_per_s": 2700.0}, "succeeded")
    assert summary["achieved_flops_per_s"] == pytest.approx(3 * 5e6 * 2700)
    assert summary["mfu"] == pytest.approx(3 * 5e6 * 2700 / 1e12, abs=1e-4)


def test_a_gan_run_keeps_both_losses_per_step(tmp_path: Path) -> None:
    """A task's own step figures (a GAN's discriminator and generator losses) become
    history columns beside the combined loss; rows of steps that lack one hold null."""
    from deepyard.tasks.catalog import info

    columns = info("gan").step_metrics
    assert {"loss_d", "loss_g"} <= set(columns)
    recorder = RunRecorder(tmp_path / "gan", "gan", "r1", T0, step_columns=columns)
    for n in (1, 2):
        recorder.add({**step(n, T0 + n), "loss_d": 1.0 / n, "loss_g": 0.5 * n})
    recorder.add(step(3, T0 + 3))  # e.g. written by an older deepyard
    recorder.finish({"steps": 3}, "succeeded")

    history = pq.read_table(recorder.run_dir / "history.parquet").to_pydict()
    assert list(history) == [*HISTORY_COLUMNS, *columns]
    assert history["loss_d"] == [1.0, 0.5, None]
    assert history["loss_g"] == [0.5, 1.0, None]
