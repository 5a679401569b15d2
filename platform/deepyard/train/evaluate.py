"""Evaluation over the whole eval split: every rank scores its rows; the confusion matrix
and loss are summed over ranks, the class scores gathered from all ranks (ROC-AUC)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F

from deepyard.data import TensorData, eval_batches
from deepyard.models.metrics import (
    classification_metrics,
    per_class_metrics,
    roc_auc,
    roc_auc_per_class,
)


@dataclass(frozen=True)
class Evaluation:
    """`metrics`: scalars (accuracy, macro precision/recall/F1, roc_auc, loss, num_samples).
    `classes`: per class (precision, recall, f1, support, roc_auc; None where undefined) and
    the confusion matrix (rows true, columns predicted)."""

    metrics: dict[str, float]
    classes: dict[str, Any]


@torch.no_grad()
def evaluate(
    engine: Any,
    data: TensorData,
    rank: int,
    world_size: int,
    batch_size: int,
    device: torch.device,
    dtype: torch.dtype,
) -> Evaluation:
    distributed = dist.is_initialized() and world_size > 1
    if distributed:
        # Ranks' batch-norm statistics drift apart in training, and a checkpoint keeps rank
        # 0's (ZeRO 0-2): evaluate every rank with rank 0's, as DDP does, so a resumed run
        # scores like an uninterrupted one.
        for buffer in getattr(engine, "module", engine).buffers():
            dist.broadcast(buffer.data, src=0)
    engine.eval()
    classes = data.num_classes
    loss_sum = torch.zeros(2, dtype=torch.float64)  # (summed loss, rows)
    probs, labels_seen, masks = [], [], []
    for inputs, labels, mask in eval_batches(data, rank, world_size, batch_size):
        # Token ids stay integers; features take the training precision.
        batch = inputs.to(device) if inputs.dtype == torch.long else inputs.to(device, dtype)
        logits = engine(batch).float().cpu()
        losses = F.cross_entropy(logits, labels, reduction="none")
        loss_sum += torch.stack([(losses * mask).sum().double(), mask.sum().double()])
        probs.append(logits.softmax(1))
        labels_seen.append(labels)
        masks.append(mask)
    engine.train()
    scores = torch.cat(probs) if probs else torch.zeros(0, classes)
    labels_all, mask_all = _cat(labels_seen, torch.int64), _cat(masks, torch.bool)
    if distributed:
        scores, labels_all, mask_all = _gather([scores, labels_all, mask_all], device)
        # NCCL reduces device tensors only; gloo takes them on the CPU.
        loss_sum = loss_sum.to(device)
        dist.all_reduce(loss_sum)
        loss_sum = loss_sum.cpu()
    return _score(scores[mask_all], labels_all[mask_all], classes, loss_sum)


def _score(
    scores: torch.Tensor, labels: torch.Tensor, classes: int, loss_sum: torch.Tensor
) -> Evaluation:
    pairs = labels * classes + scores.argmax(1)
    confusion = torch.bincount(pairs, minlength=classes * classes).view(classes, classes)
    metrics = classification_metrics(confusion)
    auc = roc_auc(scores.double().numpy(), labels.numpy()) if len(labels) else math.nan
    if not math.isnan(auc):
        metrics["roc_auc"] = auc
    metrics["loss"] = float(loss_sum[0] / loss_sum[1].clamp(min=1))
    metrics["num_samples"] = float(loss_sum[1])
    per_class: dict[str, Any] = per_class_metrics(confusion)
    per_class["roc_auc"] = [
        None if math.isnan(a) else a
        for a in roc_auc_per_class(scores.double().numpy(), labels.numpy())
    ]
    per_class["confusion"] = confusion.tolist()
    return Evaluation(metrics, per_class)


def _cat(parts: list[torch.Tensor], dtype: torch.dtype) -> torch.Tensor:
    return torch.cat(parts) if parts else torch.zeros(0, dtype=dtype)


def _gather(tensors: list[torch.Tensor], device: torch.device) -> list[torch.Tensor]:
    """Every rank's rows, rank after rank. Every rank holds the same number of rows (the
    eval shards are padded to equal length, and masked)."""
    out = []
    for tensor in tensors:
        local = tensor.to(device, torch.uint8 if tensor.dtype == torch.bool else tensor.dtype)
        parts = [torch.empty_like(local) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, local)
        out.append(torch.cat(parts).cpu().to(tensor.dtype))
    return out
