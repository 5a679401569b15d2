"""Pipeline evaluation streams several micro-batches through each DeepSpeed `eval_batch`
call (the last call shorter) and stays exact: on real gloo ranks, a GPT cut into 2
stages (also as 2 replicas of 2 stages) scores the held-out rows, padding and a ragged
last batch included, as the same model scores them in one process; and the engine
trains on afterwards with its own loss."""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

import pytest
import torch

from deepyard import tasks
from deepyard.data import TensorData
from deepyard.models import layer_init
from deepyard.models.registry import Vocab
from deepyard.testing.gloo import on_ranks
from deepyard.testing.jobs import gpt_pipeline_spec
from deepyard.train import pipeline

ARGS: dict[str, Any] = {"n_layer": 4, "n_head": 2, "d_model": 16, "max_seq_len": 8, "dropout": 0.0}
VOCAB = Vocab(size=96, pad_id=0)
LENGTH, ROWS, BATCH, SEED = 8, 21, 2, 3
TASK = tasks.get("language-modeling")
CPU = torch.device("cpu")


def _held_out() -> TensorData:
    """ROWS rows of tokens, some ending in padding (21 rows: a short last batch)."""
    ids = (torch.arange(ROWS)[:, None] * 5 + torch.arange(LENGTH)) % (VOCAB.size - 1) + 1
    ids[1, 5:] = ids[4, 2:] = ids[ROWS - 1, 6:] = VOCAB.pad_id
    labels = torch.zeros(ROWS, dtype=torch.int64)
    return TensorData(ids, labels, (LENGTH,), 2, pad_id=VOCAB.pad_id)


def _meta_gpt() -> Any:
    return layer_init.build_on_meta("gpt", ARGS, (LENGTH,), 2, VOCAB)


def _evaluate(rank: int, world: int, stages: int, per_stage: int) -> dict[str, Any]:
    from deepyard.train.dist import WorkerContext, init_process_group

    os.environ["GLOO_SOCKET_IFNAME"] = "lo"
    init_process_group(WorkerContext(rank, world, rank, "127.0.0.1", 0), cpus=1)
    pipeline.EVAL_MICRO_BATCHES_PER_STAGE = per_stage  # this forked rank's copy only
    spec = gpt_pipeline_spec(ARGS, LENGTH, world, stages, seed=SEED, gradient_accumulation=2)
    staged = pipeline.build_module(_meta_gpt(), spec, TASK, VOCAB.pad_id, (LENGTH,))
    engine = TASK.build_engine(spec, staged, total_steps=1, load_universal=False)
    calls: list[int] = []
    eval_batch = engine.eval_batch

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(kwargs["num_micro_batches"])
        return eval_batch(*args, **kwargs)

    engine.eval_batch = counted
    metrics = TASK.evaluate(engine, _held_out(), rank, world, BATCH, CPU, torch.float32).metrics
    rows = iter(_train_rows())
    step = TASK.train_step(engine, lambda: (ids := next(rows), ids), 2, CPU, torch.float32, 0)
    return {"metrics": metrics, "calls": calls, "train_loss": step.loss}


def _train_rows() -> list[torch.Tensor]:
    """A step's 2 micro-batches (every replica reads the same here)."""
    return [_held_out().inputs[i : i + BATCH] for i in (0, 4)]


@pytest.mark.parametrize(
    ("world", "stages", "per_stage", "calls"),
    [
        # 21 rows in batches of 2: 11 micro-batches through one replica
        (2, 2, 8, [11]),  # 8 per stage: one call streams all of them
        (2, 2, 1, [2, 2, 2, 2, 2, 1]),  # the training's 2 micro-batches per call
        # 2 replicas of 2 stages: 11 rows each (the second one's last row padding), 6 batches
        (4, 2, 1, [2, 2, 2]),
    ],
    ids=["one-call", "calls-of-2", "two-replicas"],
)
def test_streamed_pipeline_eval_scores_as_one_process(
    tmp_path: Path, world: int, stages: int, per_stage: int, calls: list[int]
) -> None:
    fn = functools.partial(_evaluate, stages=stages, per_stage=per_stage)
    results = on_ranks(fn, tmp_path, world, 180)
    whole = layer_init.materialise_all(_meta_gpt(), SEED)
    expected = TASK.evaluate(whole, _held_out(), 0, 1, BATCH, CPU, torch.float32).metrics
    assert expected["num_samples"] == ROWS
    ids = _train_rows()
    train_loss = sum(TASK.loss(whole(b), b, b, VOCAB.pad_id).item() for b in ids) / len(ids)
    for result in results:
        assert result["calls"] == calls  # every rank makes the same calls
        assert result["metrics"].keys() == expected.keys()
        for name, value in expected.items():
            assert result["metrics"][name] == pytest.approx(value, rel=1e-6), name
        # Evaluation gave the stages' loss function back: the next step trains on it.
        assert result["train_loss"] == pytest.approx(train_loss, rel=1e-6)
