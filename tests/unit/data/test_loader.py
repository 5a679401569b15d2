"""Per-rank batches: disjoint equal shards, the same number of steps on every rank,
a reproducible shuffle, an exact resume, and an evaluation that sees every row once."""

from __future__ import annotations

import pytest
import torch

from deepyard.data import ShardedBatches, TensorData, eval_batches, shard_bounds

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


def epoch_of(batches: ShardedBatches) -> list[int]:
    served = []
    for _ in range(batches.batches_per_epoch):
        inputs, labels = batches.next_batch()
        assert torch.equal(inputs.view(-1).long(), labels)  # inputs stay paired with labels
        served += labels.tolist()
    return served


@pytest.mark.parametrize("world_size", WORLD_SIZES)
@pytest.mark.parametrize("n", [1, 10, 13, 103])
def test_shard_bounds_are_disjoint_equal_and_complete(n: int, world_size: int) -> None:
    bounds = [shard_bounds(n, rank, world_size) for rank in range(world_size)]
    covered = [i for start, stop in bounds for i in range(start, stop)]
    assert covered == list(range(n - n % world_size))  # contiguous, disjoint, in rank order
    assert len({stop - start for start, stop in bounds}) == 1


@pytest.mark.parametrize("world_size", WORLD_SIZES)
def test_one_epoch_covers_every_row_once_minus_the_remainder(world_size: int) -> None:
    data = rows(103)
    served = [
        epoch_of(ShardedBatches(data, r, world_size, batch_size=1)) for r in range(world_size)
    ]
    flat = [i for rank_rows in served for i in rank_rows]
    assert len(flat) == len(set(flat)) == 103 - 103 % world_size


@pytest.mark.parametrize("world_size", WORLD_SIZES)
def test_every_rank_runs_the_same_number_of_batches(world_size: int) -> None:
    data = rows(103)
    ranks = [ShardedBatches(data, r, world_size, batch_size=5) for r in range(world_size)]
    assert len({b.batches_per_epoch for b in ranks}) == 1
    assert ranks[0].batches_per_epoch == (103 // world_size) // 5
    for epoch in range(2):
        served = [epoch_of(b) for b in ranks]
        flat = [i for rank_rows in served for i in rank_rows]
        assert len(flat) == len(set(flat)), f"ranks overlap in epoch {epoch}"
        assert all(len(s) == 5 * ranks[0].batches_per_epoch for s in served)
        assert all(b.epoch == epoch for b in ranks)


def test_shuffle_differs_by_epoch_and_repeats_for_the_same_seed() -> None:
    data = rows(64)
    first = ShardedBatches(data, 0, 1, batch_size=8, seed=3)
    again = ShardedBatches(data, 0, 1, batch_size=8, seed=3)
    other = ShardedBatches(data, 0, 1, batch_size=8, seed=4)
    epoch0, epoch1 = epoch_of(first), epoch_of(first)
    assert sorted(epoch0) == sorted(epoch1) == list(range(64))
    assert epoch0 != epoch1
    assert epoch0 != list(range(64))
    assert [epoch_of(again), epoch_of(again)] == [epoch0, epoch1]
    assert epoch_of(other) != epoch0


def test_without_shuffle_rows_come_in_order() -> None:
    data = rows(20)
    batches = ShardedBatches(data, 1, 2, batch_size=5, shuffle=False)
    assert epoch_of(batches) == list(range(10, 20))
    assert epoch_of(batches) == list(range(10, 20))


@pytest.mark.parametrize("consumed", [0, 3, 4, 5, 9])
def test_state_dict_resumes_the_same_next_batches(consumed: int) -> None:
    data = rows(41)
    make = lambda: ShardedBatches(data, 1, 2, batch_size=5, seed=7)  # noqa: E731
    original = make()  # 4 batches an epoch: `consumed` crosses epoch ends
    for _ in range(consumed):
        original.next_batch()
    state = original.state_dict()
    expected = [original.next_batch()[1].tolist() for _ in range(6)]

    resumed = make()
    resumed.next_batch()  # a fresh worker may have moved before it restores
    resumed.load_state_dict(state)
    assert [resumed.next_batch()[1].tolist() for _ in range(6)] == expected


def test_too_few_rows_for_one_batch_names_the_fix() -> None:
    batches = ShardedBatches(rows(10), 0, 4, batch_size=3)
    with pytest.raises(ValueError, match=r"rank 0 has 2 rows, fewer than one batch of 3"):
        batches.next_batch()


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
