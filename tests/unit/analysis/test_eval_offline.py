"""`deepyard eval` as a user runs it on a saved checkpoint: what it evaluates (the newest
published checkpoint, never a half-written one), the metrics it writes (the model's own
task on the rows, computed directly here), where they go (JSON, the run's record and
report), and the one-line errors for data that does not fit the model."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import f1_score, roc_auc_score
from torch import nn
from typer.testing import CliRunner

from deepyard.analysis import loaded as loading
from deepyard.analysis import locate, offline
from deepyard.cli.main import app
from deepyard.data import read_split
from deepyard.data.labels import LabelOutOfRange
from deepyard.errors import CheckpointError, DataError
from deepyard.models import registry

DEEPYARD = [sys.executable, "-m", "deepyard.cli.main"]
CPU = torch.device("cpu")


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*DEEPYARD, *args], capture_output=True, text=True, timeout=180, cwd=cwd)


def expected_metrics(model: nn.Module, eval_path: Path) -> dict[str, float]:
    data = read_split(str(eval_path), "features", "label")
    model.eval()
    with torch.no_grad():
        logits = model(data.inputs)
    probs = logits.softmax(1).double().numpy()
    labels = data.labels.numpy()
    return {
        "loss": float(F.cross_entropy(logits, data.labels)),
        "accuracy": float((probs.argmax(1) == labels).mean()),
        "f1_macro": float(f1_score(labels, probs.argmax(1), average="macro", zero_division=0)),
        "roc_auc": float(roc_auc_score(labels, probs, multi_class="ovr", average="macro")),
        "num_samples": float(len(labels)),
    }


def test_eval_of_a_run_folder_scores_its_newest_checkpoint_into_json_and_report(
    make_saved,
) -> None:
    saved = make_saved(steps=(5, 10))
    done = cli("eval", str(saved.run_dir), "--json")

    assert done.returncode == 0, done.stderr
    record = json.loads(done.stdout)
    assert record["step"] == 10 and record["lineage"] == saved.lineage
    assert record["data"] == str(saved.eval_path)  # the job's own eval split
    saved.model.load_state_dict(saved.states[10])
    want = expected_metrics(saved.model, saved.eval_path)
    assert {k: record["metrics"][k] for k in want} == pytest.approx(want, rel=1e-6)
    assert record["recorded_at_step"] == {"accuracy": 0.5}  # what training said then
    # The JSON file next to the run, and the run's record with the evaluation in it.
    out = saved.run_dir / "eval-step10-data-test.json"
    assert json.loads(out.read_text())["metrics"] == record["metrics"]
    (entry,) = json.loads((saved.run_dir / "evals_offline.json").read_text())
    assert entry["step"] == 10 and entry["metrics"] == record["metrics"]
    assert "wrote " + str(out) in done.stderr

    (saved.run_dir / "summary.json").write_text(json.dumps({"job": "tiny", "status": "ok"}))
    report = cli("report", str(saved.run_dir))
    assert report.returncode == 0, report.stderr
    page = Path(report.stdout.strip()).read_text()
    section = page.split("<h2>Offline evaluations</h2>", 1)[1].split("</section>", 1)[0]
    assert f"<td>{record['metrics']['accuracy']:,.4g}</td>" in section
    assert str(saved.eval_path) in section and "step-000000010" in section


def test_every_way_of_naming_the_checkpoint_finds_the_same_one(make_saved) -> None:
    saved = make_saved(steps=(5, 10))
    names = [saved.run_dir, saved.job_dir, saved.store, saved.store / saved.lineage]
    for name in names:
        found = locate.resolve(str(name), print)
        assert (found.checkpoint.lineage, found.checkpoint.step) == (saved.lineage, 10), name
        assert found.run_dir == saved.run_dir  # the run that saved it gets the result
    exact = locate.resolve(f"file://{saved.step_dir(5)}", print)
    assert exact.checkpoint.step == 5 and exact.run_dir == saved.run_dir


def test_a_half_written_checkpoint_is_refused_and_never_evaluated(make_saved) -> None:
    saved = make_saved(steps=(5, 10))
    (saved.step_dir(10) / "manifest.json").unlink()  # the save never finished

    done = cli("eval", str(saved.step_dir(10)))

    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith(f"error: CHECKPOINT {saved.step_dir(10)} has no manifest.json")
    assert f"deepyard checkpoint list {saved.store}" in line
    assert not (saved.run_dir / "evals_offline.json").exists()
    # Naming the run instead evaluates its newest checkpoint that is complete.
    assert locate.resolve(str(saved.run_dir), print).checkpoint.step == 5


def test_a_checkpoint_whose_files_changed_is_refused(make_saved) -> None:
    saved = make_saved(steps=(5,))
    weights = saved.step_dir(5) / "mp_rank_00_model_states.pt"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte, same size
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"fails verification: .*sha256 differs"):
        locate.resolve(str(saved.step_dir(5)), print)


def test_no_such_checkpoint_names_what_to_pass(tmp_path: Path) -> None:
    done = CliRunner().invoke(app, ["eval", str(tmp_path / "nope")])
    assert done.exit_code == 1
    assert done.stderr.startswith(f"error: CHECKPOINT {tmp_path / 'nope'} does not exist; pass")
    assert not (tmp_path / "nope").exists()  # never created by looking


def test_data_of_another_shape_is_refused_with_the_shapes(make_saved, tmp_path: Path) -> None:
    from deepyard.data.parquet import write_split

    saved = make_saved()
    wrong = tmp_path / "wrong.parquet"
    write_split(wrong, np.zeros((6, 1, 8, 8), np.float32), np.zeros(6, np.int64), 3)

    done = cli("eval", str(saved.run_dir), "--data", str(wrong))

    assert done.returncode == 2
    assert done.stderr.strip() == (
        f"error: --data {wrong}: its rows have shape (1, 8, 8), but the model was trained on "
        "(1, 4, 4); pass data with that shape (the job's own eval split fits: leave --data out)"
    )


def test_labels_outside_the_models_classes_are_refused(make_saved, tmp_path: Path) -> None:
    from deepyard.data.parquet import write_split

    saved = make_saved()
    wrong = tmp_path / "five.parquet"
    write_split(wrong, np.zeros((6, 1, 4, 4), np.float32), np.arange(6) % 5, 5)
    model = loading.load(locate.resolve(str(saved.run_dir), print), CPU)
    with pytest.raises(LabelOutOfRange) as info:
        loading.read_data(model, str(wrong))
    # The worker's own eval check (tests/unit/data/test_labels.py) says the same.
    assert (info.value.uri, info.value.row, info.value.value) == (str(wrong), 3, 3)
    assert str(info.value).startswith(
        f"{wrong}: label column 'label' holds 3 at row 3, outside the 3 classes 0..2; "
        "the model has the classes of its training data "
    )

    done = cli("eval", str(saved.run_dir), "--data", str(wrong))
    assert done.returncode == 2
    assert done.stderr.strip() == f"error: {info.value}"


class _Encoder(nn.Module):
    """A tiny model with embeddings: encode → (N, 2), forward → class logits."""

    def __init__(self, width: int, num_classes: int) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Flatten(), nn.Linear(width, 2))
        self.head = nn.Linear(2, num_classes)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.tanh(self.encode(x)))


@pytest.fixture
def encoder_model(monkeypatch: pytest.MonkeyPatch) -> str:
    """A model registered for this test only."""

    def build(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
        return _Encoder(int(np.prod(input_shape)), num_classes)

    entry = registry.ModelEntry("test-encoder", "test", build, "encode() for tests")
    monkeypatch.setitem(registry._REGISTRY, entry.name, entry)
    return entry.name


def test_embeddings_of_a_model_with_encode_are_written_with_labels(
    make_saved, encoder_model: str, tmp_path: Path
) -> None:
    saved = make_saved(encoder_model, args={})
    model = loading.load(locate.resolve(str(saved.run_dir), print), CPU)
    data = loading.read_data(model, None)
    out = tmp_path / "emb" / "codes.parquet"

    record = offline.evaluate_and_record(model, data, tmp_path / "e.json", out, batch_size=7)

    assert record["embeddings"] == {"path": str(out), "dim": 2}
    assert record["metrics"]["num_samples"] == 30  # evaluated as well
    table = pq.read_table(out).to_pydict()
    assert len(table["row"]) == 30 == len(data.data)
    assert table["label"] == data.data.labels.tolist()
    with torch.no_grad():
        want = saved.model.encode(data.data.inputs)
    assert np.asarray(table["embedding"]) == pytest.approx(want.numpy(), abs=1e-6)


def test_embeddings_of_a_model_without_encode_are_refused(make_saved, tmp_path: Path) -> None:
    saved = make_saved()
    args = ["eval", str(saved.run_dir), "--embeddings", str(tmp_path / "e.parquet")]
    done = CliRunner().invoke(app, args)
    assert done.exit_code == 2
    assert done.stderr.startswith(
        "error: --embeddings: model 'mlp' defines no encode(inputs) -> (N, D)"
    )
    assert not (tmp_path / "e.parquet").exists()


def test_a_packaged_dataset_name_reads_its_test_split(make_saved) -> None:
    """digits' test split (8x8 images) is read, and refused: this model takes 4x4."""
    saved = make_saved()
    model = loading.load(locate.resolve(str(saved.run_dir), print), CPU)
    with pytest.raises(DataError, match=r"--data digits: its rows have shape \(1, 8, 8\)"):
        loading.read_data(model, "digits")


def test_uri_parents_keep_scheme_and_query() -> None:
    uri = "s3://bucket/jobs/ckpt/L1/step-000000010?endpoint_override=h:9000&scheme=http"
    parent, name = locate.split_last(uri)
    assert name == "step-000000010"
    assert parent == "s3://bucket/jobs/ckpt/L1?endpoint_override=h:9000&scheme=http"
    assert locate.split_last(parent)[0] == (
        "s3://bucket/jobs/ckpt?endpoint_override=h:9000&scheme=http"
    )


def test_a_run_folder_keeps_to_its_own_lineage_after_a_restart(make_saved) -> None:
    """`deepyard run --restart` opens a newer lineage from another run: the old run still
    means its own checkpoints, while the job's location means the newest."""
    saved = make_saved(steps=(5, 10))
    newer = "20260102-000000-0002"
    (saved.store / newer).mkdir()
    (saved.store / newer / "lineage.json").write_text("{}")
    shutil.copytree(saved.step_dir(5), saved.store / newer / "step-000000005")
    second = saved.job_dir / "20260102-000000-ef01"
    second.mkdir()
    (second / "spec.yaml").write_text((saved.run_dir / "spec.yaml").read_text())
    event = {"type": "checkpoint", "step": 5, "lineage": newer, "blocked_s": 0.0, "t": 1.0}
    (second / "events.jsonl").write_text(json.dumps(event) + "\n")

    mine = locate.resolve(str(saved.run_dir), print)
    assert (mine.checkpoint.lineage, mine.checkpoint.step) == (saved.lineage, 10)
    newest = locate.resolve(str(saved.store), print)
    assert (newest.checkpoint.lineage, newest.checkpoint.step) == (newer, 5)
    assert newest.run_dir == second


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is visible here")
def test_device_cuda_without_a_gpu_names_the_fix() -> None:
    with pytest.raises(DataError, match="--device cuda: no CUDA device is visible here; use"):
        loading.pick_device("cuda")
    with pytest.raises(DataError, match="--device tpu: use cpu or cuda"):
        loading.pick_device("tpu")


def test_a_checkpoint_without_model_data_takes_it_from_the_training_split(make_saved) -> None:
    """Checkpoints saved before manifests recorded `model_data`: shape and classes come
    from the job's training data, as training found them."""
    saved = make_saved()
    path = saved.step_dir(5) / "manifest.json"
    manifest = json.loads(path.read_text())
    del manifest["model_data"]
    path.write_text(json.dumps(manifest))

    model = loading.load(locate.resolve(str(saved.run_dir), print), CPU)

    assert model.model_data == loading.ModelData((1, 4, 4), 3, None)
    record = offline.evaluate(model, loading.read_data(model, None))
    saved.model.load_state_dict(saved.states[5])
    assert record["metrics"]["loss"] == pytest.approx(
        expected_metrics(saved.model, saved.eval_path)["loss"], rel=1e-6
    )
