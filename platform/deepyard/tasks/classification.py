"""Classification: cross-entropy on logits; accuracy, macro and per-class precision, recall
and F1, the confusion matrix and ROC-AUC (binary, or one-vs-rest macro) over all rows."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from deepyard.data import TensorData
from deepyard.models.metrics import (
    classification_metrics,
    per_class_metrics,
    roc_auc,
    roc_auc_per_class,
)
from deepyard.tasks.base import EvalBatch, Task
from deepyard.train.evaluate import Evaluation


class Classification(Task):
    def loss(
        self,
        outputs: torch.Tensor,
        inputs: torch.Tensor,
        labels: torch.Tensor,
        pad_id: int | None = None,  # text models mask their own padding
    ) -> Any:
        return F.cross_entropy(outputs.float(), labels)

    def eval_batch(
        self,
        outputs: torch.Tensor,
        inputs: torch.Tensor,
        labels: torch.Tensor,
        mask: Any,
        pad_id: int | None = None,
    ) -> EvalBatch:
        logits = outputs.float()
        losses = F.cross_entropy(logits, labels, reduction="none")
        sums = {"loss": (losses * mask).sum(), "rows": mask.sum()}
        return EvalBatch(sums, {"probs": logits.softmax(1), "labels": labels})

    def finish(
        self, sums: dict[str, torch.Tensor], rows: dict[str, torch.Tensor], data: TensorData
    ) -> Evaluation:
        classes = data.num_classes
        scores = rows.get("probs", torch.zeros(0, classes)).double()
        labels = rows.get("labels", torch.zeros(0, dtype=torch.int64))
        pairs = labels * classes + scores.argmax(1)
        confusion = torch.bincount(pairs, minlength=classes * classes).view(classes, classes)
        metrics = classification_metrics(confusion)
        auc = roc_auc(scores.numpy(), labels.numpy()) if len(labels) else math.nan
        if not math.isnan(auc):
            metrics["roc_auc"] = auc
        count = float(sums.get("rows", torch.tensor(0.0)))
        metrics["loss"] = float(sums.get("loss", torch.tensor(0.0))) / max(count, 1.0)
        metrics["num_samples"] = count
        per_class: dict[str, Any] = per_class_metrics(confusion)
        per_class["roc_auc"] = [
            None if math.isnan(a) else a for a in roc_auc_per_class(scores.numpy(), labels.numpy())
        ]
        per_class["confusion"] = confusion.tolist()
        return Evaluation(metrics, per_class)
