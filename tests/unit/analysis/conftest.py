"""Checkpoints as DeepSpeed ZeRO-0 writes them (mp_rank_00_model_states.pt with the module's
state) and deepyard publishes them (per-file sha256 in a manifest written last, the
resolved spec inside), of tiny models on tiny Parquet splits: no training needed.
Checkpoints of real training runs (ZeRO-2 and ZeRO-3) are in tests/integration."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from deepyard import models
from deepyard.checkpoint.manifest import build_manifest, step_dir
from deepyard.data.parquet import write_split
from deepyard.spec import JobSpec

SHAPE = (1, 4, 4)
CLASSES = 3


@dataclass
class Saved:
    job_dir: Path  # OUTPUT_DIR/NAME
    store: Path  # OUTPUT_DIR/NAME/checkpoints
    lineage: str
    run_dir: Path  # OUTPUT_DIR/NAME/RUN_ID, which recorded the checkpoint events
    model: torch.nn.Module  # the model, with the newest step's weights
    spec: dict[str, Any]
    eval_path: Path
    model_data: dict[str, Any]
    states: dict[int, dict[str, torch.Tensor]]  # the weights saved at each step

    def step_dir(self, step: int) -> Path:
        return self.store / self.lineage / step_dir(step)


def write_data(path: Path, rows: int = 30, shape: tuple[int, ...] = SHAPE, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    inputs = rng.normal(size=(rows, *shape)).astype(np.float32)
    labels = rng.integers(0, CLASSES, size=rows)
    labels[:CLASSES] = np.arange(CLASSES)  # every class occurs
    path.parent.mkdir(parents=True, exist_ok=True)
    write_split(path, inputs, labels, CLASSES)
    return path


def publish(saved: Saved, step: int, model: torch.nn.Module, metrics: dict[str, float]) -> None:
    prefix = f"{saved.lineage}/{step_dir(step)}"
    folder = saved.store / prefix
    folder.mkdir(parents=True)
    weights = folder / "mp_rank_00_model_states.pt"
    torch.save({"module": model.state_dict()}, weights)
    data = weights.read_bytes()
    record = {
        "rank": 0,
        "cursor": {},
        "rng": {},
        "files": {
            weights.name: {"sha256": hashlib.sha256(data).hexdigest(), "size_bytes": len(data)}
        },
    }
    meta = {
        "job": saved.spec["name"],
        "lineage": saved.lineage,
        "world_size": 1,
        "zero_stage": 0,
        # As training records it: the resolved spec, every default written out.
        "spec": JobSpec.model_validate(saved.spec).model_dump(mode="json"),
        "model_data": saved.model_data,
        "step": step,
        "metrics": metrics,
        "metrics_step": step,
    }
    manifest = build_manifest(meta, [record], prefix)
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with (saved.run_dir / "events.jsonl").open("a") as events:
        event = {
            "type": "checkpoint",
            "step": step,
            "lineage": saved.lineage,
            "blocked_s": 0.01,
            "t": 0.0,
        }
        events.write(json.dumps(event) + "\n")


MakeSaved = Callable[..., Saved]


@pytest.fixture
def make_saved(tmp_path: Path) -> MakeSaved:
    """make_saved(model_name="mlp", args=..., steps=(5,)): a job folder with one run, its
    checkpoints of a randomly initialised model, and Parquet train/eval splits."""

    def make(
        name: str = "mlp",
        args: dict[str, Any] | None = None,
        steps: tuple[int, ...] = (5,),
        data: dict[str, Any] | None = None,
        vocab: models.Vocab | None = None,
    ) -> Saved:
        if data is None:
            train = write_data(tmp_path / "data" / "train.parquet", rows=40, seed=1)
            evals = write_data(tmp_path / "data" / "test.parquet", rows=30, seed=2)
            data = {"train": str(train), "eval": str(evals)}
        shape = SHAPE if vocab is None else (16,)
        spec = {
            "name": "tiny",
            "model": {"name": name, "args": {"hidden": 8} if args is None else args},
            "data": {**data, "batch_size": 8},
            "training": {"max_steps": max(steps)},
            "checkpoint": {"every_steps": min(steps)},
            "output_dir": str(tmp_path / "runs"),
        }
        job_dir = tmp_path / "runs" / "tiny"
        run_dir = job_dir / "20260101-000000-abcd"
        run_dir.mkdir(parents=True)
        (run_dir / "spec.yaml").write_text("# resolved job spec, hash x\n" + json.dumps(spec))
        store = job_dir / "checkpoints"
        lineage = "20260101-000000-0001"
        (store / lineage).mkdir(parents=True)
        (store / lineage / "lineage.json").write_text(json.dumps({"job": "tiny"}))
        torch.manual_seed(0)
        model = models.build(name, spec["model"]["args"], shape, CLASSES, vocab)
        model_data = {
            "input_shape": list(shape),
            "num_classes": CLASSES,
            "vocab": None if vocab is None else [vocab.size, vocab.pad_id],
        }
        saved = Saved(
            job_dir, store, lineage, run_dir, model, spec, Path(data["eval"]), model_data, {}
        )
        for step in steps:
            with torch.no_grad():
                for p in model.parameters():
                    p.add_(0.01 * step)
            saved.states[step] = {k: v.clone() for k, v in model.state_dict().items()}
            publish(saved, step, model, {"accuracy": 0.5})
        return saved

    return make
