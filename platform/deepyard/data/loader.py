"""Evaluation batches of one rank from an in-memory split.

Evaluation covers every row exactly once: uneven shards are padded with masked rows so
all ranks run the same number of forwards (ZeRO-3 gathers parameters collectively in
each one). Training batches stream from Parquet instead (`pipeline.ParquetLoader`).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from deepyard.data.parquet import TensorData


def eval_batches(
    data: TensorData, rank: int, world_size: int, batch_size: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """(inputs, labels, mask) batches; every row of `data` is in exactly one rank's mask."""
    n = len(data)
    per_rank = -(-n // world_size)
    start, stop = min(rank * per_rank, n), min((rank + 1) * per_rank, n)
    for lo in range(0, per_rank, batch_size):
        hi = min(lo + batch_size, per_rank)
        idx = torch.arange(start + lo, start + hi)
        mask = idx < stop
        idx = torch.where(mask, idx, torch.zeros_like(idx))
        yield data.inputs[idx], data.labels[idx], mask
