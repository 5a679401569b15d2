"""Evaluation over the whole eval split: every rank scores its rows, sums are all-reduced."""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F

from deepyard.data import TensorData, eval_batches
from deepyard.models.metrics import classification_metrics


@torch.no_grad()
def evaluate(
    engine: Any,
    data: TensorData,
    rank: int,
    world_size: int,
    batch_size: int,
    device: torch.device,
    dtype: torch.dtype,
) -> dict[str, float]:
    if dist.is_initialized() and world_size > 1:
        # Ranks' batch-norm statistics drift apart in training, and a checkpoint keeps rank
        # 0's (ZeRO 0-2): evaluate every rank with rank 0's, as DDP does, so a resumed run
        # scores like an uninterrupted one.
        for buffer in getattr(engine, "module", engine).buffers():
            dist.broadcast(buffer.data, src=0)
    engine.eval()
    classes = data.num_classes
    confusion = torch.zeros(classes * classes, dtype=torch.int64)
    loss_sum = torch.zeros(2, dtype=torch.float64)  # (summed loss, rows)
    for inputs, labels, mask in eval_batches(data, rank, world_size, batch_size):
        logits = engine(inputs.to(device, dtype)).float().cpu()
        losses = F.cross_entropy(logits, labels, reduction="none")
        loss_sum += torch.stack([(losses * mask).sum().double(), mask.sum().double()])
        pairs = labels[mask] * classes + logits[mask].argmax(1)
        confusion += torch.bincount(pairs, minlength=classes * classes)
    engine.train()
    if dist.is_initialized() and world_size > 1:
        # NCCL reduces device tensors only; gloo takes them on the CPU.
        confusion, loss_sum = confusion.to(device), loss_sum.to(device)
        dist.all_reduce(confusion)
        dist.all_reduce(loss_sum)
        confusion, loss_sum = confusion.cpu(), loss_sum.cpu()
    metrics = classification_metrics(confusion.view(classes, classes))
    metrics["loss"] = float(loss_sum[0] / loss_sum[1].clamp(min=1))
    metrics["num_samples"] = float(loss_sum[1])
    return metrics
