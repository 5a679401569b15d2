"""`deepyard run` end to end, as a user runs it: a subprocess with its own embedded Ray."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pyarrow.parquet as pq
import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "jobs" / "examples"
DEEPYARD = [sys.executable, "-m", "deepyard.cli.main"]

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(400)]


def test_digits_example_reaches_090_and_records_the_run(run_json) -> None:
    """The 2-worker digits example, unchanged: accuracy >= 0.90, real numbers everywhere."""
    summary, done = run_json(*DEEPYARD, "run", str(EXAMPLES / "digits_cnn.yaml"))
    assert summary["status"] == "succeeded"
    assert summary["eval"]["accuracy"] >= 0.90
    assert summary["steps"] == 264 and summary["samples"] == 264 * 64
    assert summary["samples_per_s"] > 0 and summary["train_time_s"] > 0
    assert 0 < summary["time_to_first_step_s"] < summary["wall_time_s"]
    assert {"ray_ready", "workers_started", "engine_ready", "first_step"} <= set(
        summary["startup_s"]
    )
    assert "test accuracy" in done.stderr  # the summary table, beside the JSON

    run_dir = Path(summary["run_dir"])
    assert json.loads((run_dir / "summary.json").read_text()) == summary
    history = pq.read_table(run_dir / "history.parquet").to_pydict()
    assert history["step"] == list(range(1, 265))
    assert history["loss"][-1] < history["loss"][0]
    assert all(rate > 0 for rate in history["samples_per_s"])
    assert "name: digits-cnn" in (run_dir / "spec.yaml").read_text()


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_stops_workers_and_embedded_ray(tmp_path: Path) -> None:
    """SIGINT mid-training: exit 130, run marked stopped, no process of the job left."""
    proc = subprocess.Popen(
        [
            *DEEPYARD,
            "run",
            str(EXAMPLES / "digits_cnn.yaml"),
            "--set",
            f"output_dir={tmp_path}",
            "--set",
            "training.epochs=null",
            "--set",
            "training.max_steps=100000",
            "--set",
            "training.log_every_steps=5",
        ],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        # As from a terminal: a test run started in the background of a non-interactive
        # shell has SIGINT ignored, and a child would inherit that (Ctrl-C would do nothing).
        preexec_fn=_default_sigint,
    )
    assert proc.stderr is not None
    deadline = time.monotonic() + 300
    for line in proc.stderr:
        if " step 5/" in line or time.monotonic() > deadline:
            break
    job = psutil.Process(proc.pid)
    family = job.children(recursive=True)
    assert any("raylet" in " ".join(p.cmdline()) for p in family), "expected an embedded Ray"

    proc.send_signal(signal.SIGINT)
    rest = proc.communicate(timeout=120)[1]
    assert proc.returncode == 130, rest[-2000:]
    assert "stopped by Ctrl-C" in rest
    _, alive = psutil.wait_procs(family, timeout=30)
    assert not [p for p in alive if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    summary_file = next(tmp_path.glob("digits-cnn/*/summary.json"))
    assert json.loads(summary_file.read_text())["status"] == "stopped"


def test_worker_failure_exits_nonzero_with_one_clear_error(tmp_path: Path) -> None:
    import numpy as np

    from deepyard.data.parquet import write_split

    rng = np.random.default_rng(0)
    flat = tmp_path / "flat.parquet"
    write_split(flat, rng.random((64, 20), dtype=np.float32), rng.integers(0, 3, 64), 3)
    done = subprocess.run(
        [
            *DEEPYARD,
            "run",
            str(EXAMPLES / "digits_cnn.yaml"),
            "--set",
            f"output_dir={tmp_path}",
            "--set",
            "data.dataset=null",
            "--set",
            f"data.train={flat}",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ},
    )
    assert done.returncode == 1
    assert "training failed on worker rank" in done.stderr
    assert done.stderr.count("needs image input") == 1, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
