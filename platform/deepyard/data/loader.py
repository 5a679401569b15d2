"""Per-rank batches from an in-memory split.

Training: every epoch draws one global order from (seed, epoch), drops the remainder
that does not divide by the world size, and gives rank r the r-th contiguous block, so
shards are disjoint, equal in size, and every rank runs the same number of steps (a
rank with one step more would hang in the all-reduce). Evaluation covers every row
once: uneven shards are padded with masked rows so all ranks run the same forwards.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import torch

from deepyard.data.parquet import TensorData


def shard_bounds(num_rows: int, rank: int, world_size: int) -> tuple[int, int]:
    """Equal contiguous block of rank `rank`; the last num_rows % world_size rows are dropped."""
    per_rank = num_rows // world_size
    return rank * per_rank, (rank + 1) * per_rank


@dataclass
class ShardedBatches:
    """Training batches of one rank. `state_dict()` is the resumable cursor."""

    data: TensorData
    rank: int
    world_size: int
    batch_size: int
    seed: int = 0
    shuffle: bool = True
    epoch: int = 0
    position: int = 0  # batches already served in this epoch
    _order: torch.Tensor | None = field(default=None, repr=False)

    @property
    def batches_per_epoch(self) -> int:
        start, stop = shard_bounds(len(self.data), self.rank, self.world_size)
        return (stop - start) // self.batch_size

    def _epoch_order(self) -> torch.Tensor:
        n = len(self.data)
        if self.shuffle:
            gen = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            order = torch.randperm(n, generator=gen)
        else:
            order = torch.arange(n)
        start, stop = shard_bounds(n, self.rank, self.world_size)
        return order[start:stop]

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.batches_per_epoch == 0:
            raise ValueError(
                f"rank {self.rank} has {len(self.data) // self.world_size} rows, fewer than "
                f"one batch of {self.batch_size}; lower data.batch_size or num_workers"
            )
        if self.position >= self.batches_per_epoch:
            self.epoch, self.position, self._order = self.epoch + 1, 0, None
        if self._order is None:
            self._order = self._epoch_order()
        lo = self.position * self.batch_size
        idx = self._order[lo : lo + self.batch_size]
        self.position += 1
        return self.data.inputs[idx], self.data.labels[idx]

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position, "seed": self.seed}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self.position, self.seed = state["epoch"], state["position"], state["seed"]
        self._order = None


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
