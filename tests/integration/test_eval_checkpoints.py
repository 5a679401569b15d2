"""`deepyard eval` and `deepyard explain` on checkpoints of real training runs: the digits
CNN (with batch norm) trained for a few steps on 2 DeepSpeed workers (torchrun, gloo),
ZeRO-2 and ZeRO-3, checkpointing every 3 steps and evaluating at each.

What a user checks first: evaluating the checkpoint of step N on the job's eval split
gives the metrics the run itself reported at step N.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from deepyard.testing.s3 import moto_s3
from deepyard.testing.torchrun import command, execute

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(600)]

SPEC = Path(__file__).resolve().parents[2] / "jobs" / "examples" / "digits_cnn.yaml"
DEEPYARD = [sys.executable, "-m", "deepyard.cli.main"]
STEPS = 6


def train(out: Path, zero: int) -> dict[str, Any]:
    """A short run; returns its summary (the last JSON line rank 0 prints)."""
    overrides = [
        f"parallelism.zero_stage={zero}",
        "training.epochs=null",
        f"training.max_steps={STEPS}",
        "training.eval_every_steps=3",
        "checkpoint.every_steps=3",
        "model.args={width: 8, stages: 2}",
    ]
    run = execute(command(SPEC, out, *overrides), timeout=400)
    assert run.code == 0, run.stderr[-3000:]
    return run.summary


def deepyard(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*DEEPYARD, *args], capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[int, dict[str, Any]]:
    root = tmp_path_factory.mktemp("eval-runs")
    return {zero: train(root / f"z{zero}", zero) for zero in (2, 3)}


def evals_at(run_dir: Path) -> dict[int, dict[str, float]]:
    """The evaluations the run reported, by step."""
    return {e.pop("step"): e for e in json.loads((run_dir / "evals.json").read_text())}


@pytest.mark.parametrize("zero", [2, 3])
def test_eval_reproduces_the_runs_own_final_metrics(runs, zero: int) -> None:
    summary = runs[zero]
    run_dir = Path(summary["run_dir"])

    done = deepyard("eval", str(run_dir), "--json")

    assert done.returncode == 0, done.stderr[-3000:]
    record = json.loads(done.stdout)
    assert record["step"] == STEPS
    assert record["data"].endswith("digits/test.parquet")
    reported = summary["eval"]
    assert reported["num_samples"] == record["metrics"]["num_samples"] == 360
    for name, value in reported.items():
        assert record["metrics"][name] == pytest.approx(value, rel=1e-6, abs=1e-6), name
    assert json.loads((run_dir / "evals_offline.json").read_text())[0]["step"] == STEPS
    (manifest,) = Path(run_dir.parent, "checkpoints").glob(f"*/step-{STEPS:09d}/manifest.json")
    model_data = json.loads(manifest.read_text())["model_data"]  # what rebuilt the model
    assert model_data == {"input_shape": [1, 8, 8], "num_classes": 10, "vocab": None}


def test_an_earlier_checkpoint_reproduces_the_metrics_of_its_step(runs) -> None:
    summary = runs[2]
    run_dir = Path(summary["run_dir"])
    (step3,) = Path(run_dir.parent, "checkpoints").glob("*/step-000000003")

    done = deepyard("eval", str(step3), "--json", "--out", str(run_dir / "e3.json"))

    assert done.returncode == 0, done.stderr[-3000:]
    record = json.loads(done.stdout)
    assert record["step"] == 3
    reported = evals_at(run_dir)[3]
    assert record["metrics"] == pytest.approx(reported, rel=1e-6, abs=1e-6)
    assert record["metrics"]["loss"] != pytest.approx(summary["eval"]["loss"])
    assert json.loads((run_dir / "e3.json").read_text())["metrics"] == record["metrics"]


def test_explain_writes_one_saliency_png_per_image(runs, tmp_path: Path) -> None:
    run_dir = Path(runs[2]["run_dir"])

    done = deepyard("explain", str(run_dir), "--rows", "0,5,9", "--out", str(tmp_path))

    assert done.returncode == 0, done.stderr[-3000:]
    index = json.loads((tmp_path / "index.json").read_text())
    assert [r["row"] for r in index["rows"]] == [0, 5, 9]
    for i, row in enumerate(index["rows"]):
        name = f"{i:03d}-row{row['row']}-pred{row['predicted']}-true{row['true']}.png"
        assert row["file"] == name and row["target"] == row["predicted"]
        assert 0.0 < row["probability"] <= 1.0
        with Image.open(tmp_path / name) as image:
            image.verify()
        with Image.open(tmp_path / name) as image:
            # 8x8 digits scaled 16x: image | 4 px | heatmap
            assert image.format == "PNG" and image.size == (2 * 128 + 4, 128)
            heat = image.crop((132, 0, 260, 128)).getcolors(10_000)
            assert heat is not None and len(heat) > 2  # not a blank heatmap


@pytest.fixture
def s3_root(tmp_path: Path) -> Iterator[str]:
    """An empty prefix on a moto S3 server on 127.0.0.1 (dummy credentials in the env)."""
    with moto_s3("ckpts") as endpoint:
        yield f"s3://ckpts/jobs/cnn?endpoint_override={endpoint}&scheme=http&region=us-east-1"


def test_a_checkpoint_in_an_s3_store_evaluates_like_the_local_one(
    runs, s3_root: str, tmp_path: Path
) -> None:
    """The ZeRO-3 checkpoint copied to S3 (as a job with an s3:// checkpoint.uri writes it):
    the store's URI alone finds it; its files are downloaded, verified and consolidated."""
    from deepyard.checkpoint.store import Store

    summary = runs[3]
    local = Path(summary["run_dir"]).parent / "checkpoints"
    remote = Store.open(s3_root)
    for path in sorted(local.rglob("*")):
        if path.is_file():
            remote.put_file(path, path.relative_to(local).as_posix())

    done = deepyard("eval", s3_root, "--json", "--out", str(tmp_path / "s3.json"))

    assert done.returncode == 0, done.stderr[-3000:]
    record = json.loads(done.stdout)
    assert record["step"] == STEPS and record["checkpoint"].startswith("s3://ckpts/jobs/cnn")
    assert record["metrics"] == pytest.approx(summary["eval"], rel=1e-6, abs=1e-6)
