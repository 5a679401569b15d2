"""The autoencoder and the GAN train CI-sized versions on 2 real DeepSpeed workers (8x8
digits); each evaluation sends a PNG grid; a GAN checkpointed mid-run (two engines, two
optimizers, two schedules) resumes onto exactly the losses of an uninterrupted run."""

from __future__ import annotations

import base64
import contextlib
import io
import json
import math
import re
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from deepyard.launch.local import run_job
from deepyard.tasks.images import grid_size
from deepyard.telemetry.report import write_report
from deepyard.testing.torchrun import command, execute

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

EXAMPLES = Path(__file__).resolve().parents[2] / "jobs" / "examples"
SMALL = ["training.epochs=null", "optimizer.warmup_steps=2", "data.batch_size=32"]
AUTOENCODER = ["model.name=conv-autoencoder", "model.args={width: 8, latent: 8}", *SMALL]
GAN = ["model.name=dcgan", "model.args={width: 8, latent: 16}", *SMALL]


def of_type(events: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [e for e in events if e["type"] == kind]


def picture(event: dict[str, Any]) -> Image.Image:
    image = Image.open(io.BytesIO(base64.b64decode(event["png_base64"])))
    image.load()
    return image


def test_autoencoder_trains_on_two_workers(ray_session, digits_job) -> None:
    """40 steps: the reconstruction error falls, in training and on the whole eval split;
    each evaluation sends originals above reconstructions."""
    spec, sources = digits_job(
        *AUTOENCODER, "training.max_steps=40", "training.eval_every_steps=20", "optimizer.lr=0.01"
    )
    events: list[dict[str, Any]] = []
    summary = run_job(spec, sources, events.append, print)

    curve = [e["loss"] for e in of_type(events, "step")]
    assert len(curve) == 40
    assert np.mean(curve[-10:]) < 0.75 * np.mean(curve[:10]), curve
    first, last = (e["metrics"] for e in of_type(events, "eval"))
    assert last["mse"] < first["mse"] < curve[0]
    assert summary["eval"]["num_samples"] == 360
    images = of_type(events, "image")
    assert [e["path"] for e in images] == ["samples/step_000020.png", "samples/step_000040.png"]
    assert picture(images[-1]).size == grid_size(2, 8, 8, 8)


def test_gan_trains_on_two_workers(ray_session, digits_job) -> None:
    """30 steps: both losses stay finite and the discriminator is not yet certain, the
    samples from fixed noise change between evaluations, and the classifier-feature
    Fréchet distance to the eval images falls."""
    spec, sources = digits_job(
        *GAN, "training.max_steps=30", "training.eval_every_steps=10", "optimizer.lr=0.002"
    )
    events: list[dict[str, Any]] = []
    summary = run_job(spec, sources, events.append, print)

    steps = of_type(events, "step")
    assert len(steps) == 30
    for step in steps:
        assert math.isfinite(step["loss_d"]) and math.isfinite(step["loss_g"])
        assert step["loss"] == pytest.approx(step["loss_d"] + step["loss_g"])
    assert 0.0 < steps[-1]["d_fake"] < steps[-1]["d_real"] < 1.0
    evals = [e["metrics"] for e in of_type(events, "eval")]
    assert len(evals) == 3
    assert evals[-1]["frechet_distance"] < evals[0]["frechet_distance"], evals
    assert summary["eval"]["num_samples"] == 360
    assert summary["eval"]["inception_score"] >= 1.0
    grids = [np.asarray(picture(e)) for e in of_type(events, "image")]
    assert len(grids) == 3 and grids[0].shape == grid_size(4, 8, 8, 8)[::-1]
    assert np.abs(grids[-1].astype(int) - grids[0].astype(int)).mean() > 5  # of 255


def test_gan_history_has_both_losses(tmp_path: Path) -> None:
    """A GAN user plots the discriminator's and the generator's loss from history.parquet:
    one row per step, each loss a finite column, and `loss` their sum. The same figures
    are served to Prometheus while the job runs (rank 0's exporter, scraped here over
    HTTP) and plotted by `deepyard report`."""
    targets = tmp_path / "targets"
    overrides = [f"telemetry.targets_dir={targets}", "telemetry.linger_s=3"]
    with Scraper(targets) as scraper:
        run = execute(
            command(
                EXAMPLES / "digits_cnn.yaml", tmp_path, *GAN, "training.max_steps=4", *overrides
            ),
            timeout=400,
        )
    assert run.code == 0 and run.summary["status"] == "succeeded", run.stderr[-3000:]
    history = run.history()
    assert history["step"] == [1, 2, 3, 4]
    for name in ("loss_d", "loss_g", "d_real", "d_fake"):
        assert all(math.isfinite(v) for v in history[name]), (name, history[name])
    for total, loss_d, loss_g in zip(
        history["loss"], history["loss_d"], history["loss_g"], strict=True
    ):
        assert total == pytest.approx(loss_d + loss_g)

    last = scraper.last  # the lingering endpoint's final values: step 4's
    assert last.get("deepyard_train_step") == 4, last
    for name in ("loss_d", "loss_g", "d_real", "d_fake"):
        assert last[f"deepyard_train_step_metric:{name}"] == pytest.approx(history[name][-1])

    figure = report_figures(write_report(run.run_dir).read_text())["task-metrics"]
    lines = {trace["name"]: trace for trace in figure["data"]}
    assert lines["loss_d"]["x"] == [1, 2, 3, 4]
    assert lines["loss_g"]["y"] == pytest.approx(history["loss_g"])


class Scraper:
    """Scrapes the job's /metrics (found through its file_sd target file) every 0.2 s on
    a thread until the job is gone; `last` holds the newest scrape's rank-0 gauges."""

    def __init__(self, targets: Path) -> None:
        self.targets, self.last = targets, dict[str, float]()
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._poll, daemon=True)

    def __enter__(self) -> Scraper:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.done.set()
        self.thread.join(timeout=10)

    def _poll(self) -> None:
        while not self.done.wait(0.2):
            for target in self.targets.glob("*.json"):
                with contextlib.suppress(OSError, ValueError):
                    [entry] = json.loads(target.read_text())
                    self.last = self._gauges(entry["targets"][0]) or self.last

    @staticmethod
    def _gauges(address: str) -> dict[str, float]:
        with urllib.request.urlopen(f"http://{address}/metrics", timeout=2) as answer:
            text = answer.read().decode()
        out = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.labels.get("rank") == "0" and family.type == "gauge":
                    name = sample.labels.get("name")
                    out[sample.name + (f":{name}" if name else "")] = sample.value
        return out


def report_figures(page: str) -> dict[str, dict[str, Any]]:
    found = re.findall(
        r"<script type='application/json' id='fig-([\w-]+)-data'>(.*?)</script>", page
    )
    return {key: json.loads(data) for key, data in found}


# --- checkpoint and resume ------------------------------------------------------------------

MAX_STEPS = 24
RESUME = [
    *GAN,
    f"training.max_steps={MAX_STEPS}",
    "training.eval_every_steps=10",
    "optimizer.lr=0.002",
    "checkpoint.every_steps=5",
    "faults=[{kind: sigterm, step: 7}]",
]


def torchrun(out: Path, *overrides: str) -> dict[str, Any]:
    """`torchrun -m deepyard.train` on 2 ranks; the summary it prints (also when stopped)."""
    run = execute(command(EXAMPLES / "digits_cnn.yaml", out, *overrides), timeout=400)
    assert run.summary, run.stderr[-3000:]
    return run.summary


def losses(summary: dict[str, Any]) -> dict[int, float]:
    history = pq.read_table(Path(summary["run_dir"]) / "history.parquet").to_pydict()
    return dict(zip(history["step"], history["loss"], strict=True))


@pytest.mark.slow
def test_gan_resumes_bit_for_bit(tmp_path: Path) -> None:
    """SIGTERM at step 7 → both engines checkpoint under one tag and the job stops; the
    same command again → the rest of the run with exactly the losses and evaluation of
    a run that was never stopped."""
    whole = torchrun(tmp_path / "whole", *RESUME[:-1])
    stopped = torchrun(tmp_path / "job", *RESUME)
    assert whole["status"] == "succeeded" and stopped["status"] == "preempted"
    stop_step = stopped["steps"]
    assert 7 <= stop_step < MAX_STEPS

    (lineage,) = (tmp_path / "job" / "digits-cnn" / "checkpoints").glob("*/lineage.json")
    manifest = json.loads((lineage.parent / f"step-{stop_step:09d}" / "manifest.json").read_text())
    for engine in ("generator", "discriminator"):  # both engines, both ZeRO partitions
        for name in ("mp_rank_00_model_states.pt", "zero_pp_rank_1_mp_rank_00_optim_states.pt"):
            assert f"{engine}/{name}" in manifest["files"]

    resumed = torchrun(tmp_path / "job", *RESUME)
    assert resumed["status"] == "succeeded"
    assert resumed["start_step"] == stop_step
    reference, before, after = losses(whole), losses(stopped), losses(resumed)
    assert sorted(after) == list(range(stop_step + 1, MAX_STEPS + 1))
    assert before == {step: reference[step] for step in before}
    assert after == {step: reference[step] for step in after}  # bit for bit
    assert resumed["eval"] == whole["eval"]
    samples = Path(resumed["run_dir"]) / "samples" / f"step_{MAX_STEPS:06d}.png"
    assert Image.open(samples).size == grid_size(4, 8, 8, 8)

    # Both engines' weights, merged from their ZeRO partitions, score offline like the run.
    done = subprocess.run(
        [sys.executable, "-m", "deepyard.cli.main", "eval", resumed["run_dir"], "--json"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    offline = json.loads(done.stdout)["metrics"]
    for name in ("frechet_distance", "inception_score", "num_samples"):
        assert offline[name] == pytest.approx(resumed["eval"][name], rel=1e-5), name
