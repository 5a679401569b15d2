"""Evaluation batches: every row seen once over all ranks, the same forwards per rank."""

from __future__ import annotations

import pytest
import torch

from deepyard.data import TensorData, eval_batches

WORLD_SIZES = [1, 2, 3, 4]


def rows(n: int) -> TensorData:
    """n rows whose input and label both hold the row's index, so batches name their rows."""
    index = torch.arange(n)
    return TensorData(
        inputs=index.float().view(n, 1, 1, 1),
        labels=index,
        input_shape=(1, 1, 1),
        num_classes=n,
    )


@pytest.mark.parametrize("world_size", WORLD_SIZES)
@pytest.mark.parametrize("n", [1, 7, 10, 103])
def test_eval_batches_cover_every_row_exactly_once(n: int, world_size: int) -> None:
    data = rows(n)
    seen: list[int] = []
    counts = []
    for rank in range(world_size):
        batches = list(eval_batches(data, rank, world_size, batch_size=4))
        counts.append(len(batches))
        for inputs, labels, mask in batches:
            assert mask.dtype == torch.bool
            assert len(inputs) == len(labels) == len(mask)
            seen += labels[mask].tolist()
    assert sorted(seen) == list(range(n))
    assert len(set(counts)) == 1, f"ranks run different numbers of forwards: {counts}"
