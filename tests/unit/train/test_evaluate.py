"""Evaluation over the whole eval split: one process, and two gloo ranks whose summed
confusion matrix gives the same metrics as one process scoring every row."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn

from deepyard.data import TensorData
from deepyard.models.metrics import classification_metrics
from deepyard.train.evaluate import evaluate

CPU = torch.device("cpu")


def tiny_problem(rows: int = 23, classes: int = 4) -> tuple[nn.Module, TensorData]:
    gen = torch.Generator().manual_seed(0)
    inputs = torch.randn(rows, 6, generator=gen)
    labels = torch.randint(0, classes, (rows,), generator=gen)
    torch.manual_seed(0)
    model = nn.Linear(6, classes)
    return model, TensorData(inputs, labels, (6,), classes)


def test_single_process_scores_every_row() -> None:
    model, data = tiny_problem()
    metrics = evaluate(model, data, 0, 1, 5, CPU, torch.float32)
    with torch.no_grad():
        logits = model(data.inputs)
    predicted = logits.argmax(1)
    cm = torch.bincount(data.labels * 4 + predicted, minlength=16).view(4, 4)
    assert metrics["num_samples"] == 23
    assert metrics["loss"] == pytest.approx(float(F.cross_entropy(logits, data.labels)))
    assert metrics["accuracy"] == pytest.approx(float((predicted == data.labels).double().mean()))
    assert {k: metrics[k] for k in classification_metrics(cm)} == classification_metrics(cm)
    assert model.training  # evaluation hands the model back in training mode


def _eval_rank(rank: int, world_size: int, store: str, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world_size)
    try:
        model, data = tiny_problem()
        metrics = evaluate(model, data, rank, world_size, 5, CPU, torch.float32)
        Path(out, f"rank{rank}.json").write_text(json.dumps(metrics))
    finally:
        dist.destroy_process_group()


def test_two_gloo_ranks_agree_with_one_process(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("GLOO_SOCKET_IFNAME", "lo")  # gloo's own sockets stay on loopback
    # fork: the ranks need no re-import of torch, so this costs about a second.
    ctx = mp.start_processes(
        _eval_rank,
        args=(2, str(tmp_path / "store"), str(tmp_path)),
        nprocs=2,
        join=False,
        start_method="fork",
    )
    deadline = time.monotonic() + 60
    try:
        while not ctx.join(timeout=1):
            assert time.monotonic() < deadline, "gloo ranks did not finish in 60 s"
    finally:
        for proc in ctx.processes:
            if proc.is_alive():
                proc.kill()
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    model, data = tiny_problem()
    alone = evaluate(model, data, 0, 1, 5, CPU, torch.float32)
    for metrics in ranks:
        assert metrics["num_samples"] == 23  # 12 + 11 rows; the padding row is masked out
        assert metrics == pytest.approx(alone, rel=1e-6)  # float32 losses, other sums
