"""Evaluation over the whole eval split: one process, and two gloo ranks whose summed
confusion matrix and gathered class scores give the same metrics as one process scoring
every row, and as scikit-learn on those rows (ROC-AUC is not a mean of per-rank AUCs)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import precision_recall_fscore_support, roc_auc_score
from torch import nn

from deepyard.data import TensorData
from deepyard.models.metrics import classification_metrics, roc_auc
from deepyard.tasks import get
from deepyard.testing.gloo import on_two_ranks

evaluate = get("classification").evaluate

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
    metrics = evaluate(model, data, 0, 1, 5, CPU, torch.float32).metrics
    with torch.no_grad():
        logits = model(data.inputs)
    predicted = logits.argmax(1)
    cm = torch.bincount(data.labels * 4 + predicted, minlength=16).view(4, 4)
    assert metrics["num_samples"] == 23
    assert metrics["loss"] == pytest.approx(float(F.cross_entropy(logits, data.labels)))
    assert metrics["accuracy"] == pytest.approx(float((predicted == data.labels).double().mean()))
    assert {k: metrics[k] for k in classification_metrics(cm)} == classification_metrics(cm)
    assert model.training  # evaluation hands the model back in training mode


def _eval_rank(rank: int, world_size: int) -> dict[str, Any]:
    model, data = tiny_problem()
    return vars(evaluate(model, data, rank, world_size, 5, CPU, torch.float32))


def test_two_gloo_ranks_agree_with_one_process(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("GLOO_SOCKET_IFNAME", "lo")  # gloo's own sockets stay on loopback
    # fork: the ranks need no re-import of torch, so this costs about a second.
    ranks = on_two_ranks(_eval_rank, tmp_path)
    model, data = tiny_problem()
    alone = evaluate(model, data, 0, 1, 5, CPU, torch.float32)
    for result in ranks:
        metrics = result["metrics"]
        assert metrics["num_samples"] == 23  # 12 + 11 rows; the padding row is masked out
        assert metrics == pytest.approx(alone.metrics, rel=1e-6)  # float32 losses, other sums
        assert result["classes"] == alone.classes  # counts and scores of the same rows

    # The same figures as scikit-learn on all 23 rows' predictions.
    with torch.no_grad():
        probs = model(data.inputs).softmax(1).double().numpy()
    y_true = data.labels.numpy()
    expected_auc = roc_auc_score(y_true, probs, multi_class="ovr", average="macro")
    assert ranks[0]["metrics"]["roc_auc"] == pytest.approx(expected_auc, abs=1e-6)
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, probs.argmax(1), labels=range(4), average=None, zero_division=0
    )
    assert ranks[0]["classes"]["precision"] == pytest.approx(precision.tolist())
    assert ranks[0]["classes"]["recall"] == pytest.approx(recall.tolist())
    assert ranks[0]["classes"]["f1"] == pytest.approx(f1.tolist())
    assert ranks[0]["classes"]["support"] == support.tolist()
    # Averaging each rank's own AUC would give another number here (and rank 0's rows
    # miss a class altogether): the scores are gathered, not the AUCs averaged.
    per_rank = [roc_auc(probs[h], y_true[h]) for h in (slice(0, 12), slice(12, 23))]
    assert abs(sum(per_rank) / 2 - expected_auc) > 0.01


def test_token_ids_reach_the_model_as_integers() -> None:
    """A text split's inputs are token ids: evaluation must not cast them to floats."""
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(1, 50, (9, 5), generator=gen)
    labels = torch.randint(0, 2, (9,), generator=gen)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Embedding(50, 4), nn.Flatten(), nn.Linear(20, 2))
    metrics = evaluate(model, TensorData(ids, labels, (5,), 2), 0, 1, 4, CPU, torch.float32)
    with torch.no_grad():
        expected = float(F.cross_entropy(model(ids), labels))
    assert metrics.metrics["loss"] == pytest.approx(expected)
    assert metrics.metrics["num_samples"] == 9
