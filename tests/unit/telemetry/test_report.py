"""`deepyard report`: a run directory's own records, drawn as one offline HTML page.

Run directories are written here as the recorder writes them (real Parquet, JSON and
JSON Lines files), with no training; the page's figure data is read back and compared
with what the files hold.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import plotly.graph_objects as go
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from deepyard.cli.main import app
from deepyard.errors import DeepyardError
from deepyard.telemetry.record import HISTORY_COLUMNS
from deepyard.telemetry.report import write_report

T0 = 1_700_000_000.0
CAUSE = "worker rank 1 (pid 4242) died: The actor died unexpectedly"


def history_row(step: int, attempt: int, t: float) -> dict[str, Any]:
    return {
        "step": step,
        "epoch": 0,
        "loss": round(3.0 - 0.1 * step + 0.01 * attempt, 6),
        "lr": 0.001,
        "samples_per_s": 1000.0 + 10 * step + attempt,
        "step_time_s": 0.05 + 0.001 * step,
        "t": t,
        "attempt": attempt,
    }


def write_run(
    root: Path,
    rows: list[dict[str, Any]],
    summary: dict[str, Any],
    events: Sequence[dict[str, Any]] = (),
    evals: list[dict[str, Any]] | None = None,
) -> Path:
    run_dir = root / "tiny" / "r1"
    run_dir.mkdir(parents=True)
    columns = {c: [row[c] for row in rows] for c in HISTORY_COLUMNS}
    pq.write_table(pa.table(columns), run_dir / "history.parquet")  # as RunRecorder does
    base = {"job": "tiny", "run_id": "r1", "time_to_first_step_s": 5.0, "startup_s": {}}
    (run_dir / "summary.json").write_text(json.dumps({**base, **summary}))
    (run_dir / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    (run_dir / "spec.yaml").write_text("# resolved job spec, hash 0123abcd4567\nname: tiny\n")
    if evals is not None:
        (run_dir / "evals.json").write_text(json.dumps(evals))
    return run_dir


def figures(page: str) -> dict[str, dict[str, Any]]:
    """Each figure's JSON, as the page embeds it next to its plot."""
    found = re.findall(
        r"<script type='application/json' id='fig-([\w-]+)-data'>(.*?)</script>", page
    )
    return {key: json.loads(data) for key, data in found}


def plotly_accepts(fig: dict[str, Any]) -> bool:
    """plotly.py's schema check: an unknown property raises, and a Python-only spelling
    (`marker_color`, which plotly.js ignores) comes back changed."""
    checked = json.loads(go.Figure(fig).to_json())
    checked["layout"].pop("template", None)
    layout = {key: value for key, value in fig["layout"].items() if value != []}
    return checked == {"data": fig["data"], "layout": layout}


def traces(fig: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {trace.get("name", ""): trace for trace in fig["data"]}


def labels(fig: dict[str, Any]) -> list[str]:
    return [a["text"] for a in fig["layout"].get("annotations", [])]


@pytest.fixture
def two_attempts(tmp_path: Path) -> tuple[Path, list[dict[str, Any]]]:
    """Attempt 1 runs steps 1-8 and dies; attempt 2 resumes from step 5 and runs 6-12."""
    rows = [history_row(s, 1, T0 + 10 + s) for s in range(1, 9)]
    rows += [history_row(s, 2, T0 + 40 + s) for s in range(6, 13)]
    events = [
        {"type": "phase", "name": "engine_ready", "t": T0 + 4, "attempt": 1},
        {"type": "checkpoint", "step": 5, "blocked_s": 0.0123, "t": T0 + 16, "attempt": 1},
        {"type": "checkpoint_saved", "step": 5, "write_s": 0.0456, "size_bytes": 2**20,
         "t": T0 + 16.1, "attempt": 1},
        {"type": "phase", "name": "engine_ready", "t": T0 + 44, "attempt": 2},
        {"type": "resumed", "step": 5, "checkpoint": "ckpt/step-5", "from_world_size": 2,
         "world_size": 2, "restore_s": 0.5, "t": T0 + 45, "attempt": 2},
    ]  # fmt: skip
    evals = [
        {"step": 4, "accuracy": 0.4321, "f1_macro": 0.4, "loss": 2.5, "num_samples": 100},
        {"step": 12, "accuracy": 0.8765, "f1_macro": 0.8, "loss": 1.5, "num_samples": 100},
    ]
    summary = {
        "status": "succeeded",
        "steps": 12,
        "steps_this_attempt": 7,
        "train_time_s": 0.41,
        "samples_per_s": 1234.5,
        "final_loss": 1.82,
        "data_wait_fraction": 0.125,
        "goodput": 0.4375,
        "eval": {"accuracy": 0.8765, "num_samples": 100},
        "attempts": 2,
        "recoveries": [{"attempt": 2, "cause": CAUSE, "detect_s": 0.08, "resumed_step": 5,
                        "restore_s": 0.5, "steps_redone": 3, "first_step_s": 7.2}],
        "startup_s": {"ray_ready": 3.0, "engine_ready": 1.0, "first_step": 1.0},
    }  # fmt: skip
    return write_run(tmp_path, rows, summary, events, evals), rows


def test_a_two_attempt_run_draws_its_own_data_with_restarts_and_redone_steps(
    two_attempts: tuple[Path, list[dict[str, Any]]],
) -> None:
    run_dir, rows = two_attempts
    out = write_report(run_dir)
    assert out == run_dir / "report.html"
    page = out.read_text()
    figs = figures(page)
    assert set(figs) == {"loss", "throughput", "step-time", "data-wait", "evals", "checkpoints"}
    for fig in figs.values():
        assert plotly_accepts(fig)

    loss = traces(figs["loss"])
    for attempt in (1, 2):
        mine = [r for r in rows if r["attempt"] == attempt]
        assert loss[f"attempt {attempt}"]["x"] == [r["step"] for r in mine]
        assert loss[f"attempt {attempt}"]["y"] == [r["loss"] for r in mine]
    assert loss["redone steps (3)"]["x"] == [6, 7, 8]
    assert {"attempt 1 failed", "attempt 2 resumed at step 5"} <= set(labels(figs["loss"]))

    rates = [t["y"] for t in figs["throughput"]["data"]]
    assert [r["samples_per_s"] for r in rows] == rates[0] + rates[1]  # by step, per attempt
    assert "no training for 28.0 s" in labels(figs["throughput"])  # step 8 at +18 → step 6 at +46
    step_time = figs["step-time"]
    assert step_time["data"][0]["x"] == [r["step_time_s"] for r in rows]
    assert any(label.startswith("p99 ") for label in labels(step_time))
    assert traces(figs["evals"])["accuracy"]["y"] == [0.4321, 0.8765]
    assert traces(figs["checkpoints"])["training blocked (s)"]["y"] == [0.0123]
    assert traces(figs["checkpoints"])["write (s)"]["y"] == [0.0456]

    assert "tiny · r1" in page and "0123abcd4567" in page and "succeeded" in page
    assert "training time (last attempt)" in page and "1,234 samples/s" in page
    assert "43.8%" in page  # goodput
    assert CAUSE in page  # the recoveries table
    assert "<script src" not in page  # plotly.js is inlined: the page opens offline


def test_a_run_without_evals_or_checkpoints_says_so(tmp_path: Path) -> None:
    rows = [history_row(s, 1, T0 + s) for s in range(1, 6)]
    run_dir = write_run(tmp_path, rows, {"status": "succeeded", "steps": 5, "attempts": 1})
    page = write_report(run_dir).read_text()
    figs = figures(page)
    assert set(figs) == {"loss", "throughput", "step-time"}
    assert list(traces(figs["loss"])) == ["attempt 1"]
    assert not any("failed" in label for label in labels(figs["loss"]))
    assert "No evaluations" in page and "No checkpoint events" in page
    assert "No restarts" in page


def test_a_failed_run_with_an_empty_history_shows_its_error(tmp_path: Path) -> None:
    error = "training failed on worker rank 0: <loss is NaN> at step 0"
    summary = {"status": "failed", "error": error, "attempts": 1, "time_to_first_step_s": None}
    run_dir = write_run(tmp_path, [], summary)
    page = write_report(run_dir, tmp_path / "out" / "failed.html").read_text()
    assert figures(page) == {}
    assert "failed</span>" in page
    assert "training failed on worker rank 0: &lt;loss is NaN&gt; at step 0" in page
    assert "No steps recorded" in page


def test_a_missing_or_incomplete_run_directory_is_named(tmp_path: Path) -> None:
    with pytest.raises(DeepyardError, match=re.escape(f"{tmp_path / 'gone'}: no such run")):
        write_report(tmp_path / "gone")
    (tmp_path / "job" / "r7").mkdir(parents=True)
    with pytest.raises(DeepyardError, match=r"summary\.json is missing"):
        write_report(tmp_path / "job" / "r7")
    (tmp_path / "job" / "r7" / "summary.json").write_text("{}")
    with pytest.raises(DeepyardError, match=re.escape(f"pick one of its runs, e.g. {tmp_path}")):
        write_report(tmp_path / "job")


def test_cli_writes_the_report_and_prints_its_path(
    two_attempts: tuple[Path, list[dict[str, Any]]], tmp_path: Path
) -> None:
    run_dir, _ = two_attempts
    out = tmp_path / "r.html"
    result = CliRunner().invoke(app, ["report", str(run_dir), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == str(out) and out.stat().st_size > 1_000_000

    missing = CliRunner().invoke(app, ["report", str(tmp_path / "nope")])
    assert missing.exit_code == 2
    assert f"error: {tmp_path / 'nope'}: no such run directory" in missing.stderr
    assert "Traceback" not in missing.output


def gan_run(root: Path) -> Path:
    """A GAN run as RunRecorder writes it: attempt 1 runs steps 1-6 and dies, attempt 2
    resumes from step 4 and runs 5-8; every step carries the task's four figures."""
    from deepyard.tasks.catalog import info
    from deepyard.telemetry.record import RunRecorder

    recorder = RunRecorder(root / "gan" / "r1", "gan", "r1", T0, info("gan").step_metrics)
    recorder.add({"type": "start", "attempt": 1})
    for attempt, steps in ((1, range(1, 7)), (2, range(5, 9))):
        for n in steps:
            figures = gan_figures(n, attempt)
            event = history_row(n, attempt, T0 + 10 * attempt + n)
            event["loss"] = figures["loss_d"] + figures["loss_g"]
            recorder.add({"type": "step", **event, **figures})
    recorder.add({"type": "resumed", "step": 4, "t": T0 + 24, "attempt": 2, "restore_s": 0.1})
    recorder.finish({"steps": 8, "attempts": 2}, "succeeded")
    return recorder.run_dir


def gan_figures(step: int, attempt: int) -> dict[str, float]:
    return {
        "loss_d": 1.5 - 0.05 * step,
        "loss_g": 0.7 + 0.03 * step + 0.001 * attempt,
        "d_real": 0.5 + 0.02 * step,
        "d_fake": 0.5 - 0.02 * step,
    }


def test_a_gan_report_plots_its_own_losses_per_attempt(tmp_path: Path) -> None:
    page = write_report(gan_run(tmp_path)).read_text()
    figs = figures(page)
    assert "<h2>Task metrics</h2>" in page
    fig = figs["task-metrics"]
    assert plotly_accepts(fig)
    assert fig["layout"]["title"]["text"] == "Task metrics by step: loss_d, loss_g, d_real, d_fake"
    lines = traces(fig)
    assert list(lines) == ["loss_d", "loss_g", "d_real", "d_fake"]
    steps = [1, 2, 3, 4, 5, 6, None, 5, 6, 7, 8]  # a gap where attempt 2 goes back to step 5
    for name, line in lines.items():
        assert line["x"] == steps
        expected = [None if s is None else gan_figures(s, 1 if i < 6 else 2)[name]
                    for i, s in enumerate(steps)]  # fmt: skip
        assert line["y"] == pytest.approx(expected), name
    assert "attempt 1 failed" in labels(fig)


def test_other_tasks_reports_have_no_task_metrics_section(
    two_attempts: tuple[Path, list[dict[str, Any]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A classifier's page is byte for byte what it was before the GAN's figure existed."""
    from deepyard.telemetry import report

    run_dir, _ = two_attempts
    page = write_report(run_dir, run_dir / "now.html").read_text()
    assert "Task metrics" not in page and "task-metrics" not in page
    without = tuple(f for f in report.FIGURES if f[0] != "task-metrics")
    monkeypatch.setattr(report, "FIGURES", without)
    assert write_report(run_dir, run_dir / "before.html").read_text() == page
