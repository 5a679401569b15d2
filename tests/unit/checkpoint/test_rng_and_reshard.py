"""Resume state that is not DeepSpeed's: generator states and data cursors."""

from __future__ import annotations

import json
import random

import numpy as np
import torch

from deepyard.checkpoint import rng
from deepyard.data import order


def draws() -> tuple[float, float, list[float]]:
    return random.random(), float(np.random.rand()), torch.rand(3).tolist()


def test_rng_states_survive_json_and_replay_the_same_draws() -> None:
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    draws()
    saved = json.loads(json.dumps(rng.capture()))
    expected = draws()
    draws()
    rng.restore(saved)
    assert draws() == expected


def test_reshard_to_fewer_ranks_with_a_larger_batch_covers_the_rest_exactly() -> None:
    # 2 ranks x 8 rows per batch, 3 steps done: 24 rows consumed on each rank. The
    # same global batch on 1 rank is 16 rows per batch.
    states = [
        {
            "epoch": 1,
            "seed": 0,
            "rank": r,
            "world_size": 2,
            "batch_size": 8,
            "num_rows": 200,
            "ranges": [list(rng_)],
            "consumed": consumed,
        }
        for r, (rng_, consumed) in enumerate([((0, 96), 24), ((96, 192), 24)])
    ]
    [one] = order.reshard(states, 1, batch_size=16)
    positions = [p for lo, hi in one["ranges"] for p in range(lo, hi)]
    remaining = list(range(24, 96)) + list(range(120, 192))
    assert positions == remaining  # nothing skipped, nothing repeated
    assert len(positions) % 16 == 0
    assert one["batch_size"] == 16 and one["consumed"] == 0


def test_reshard_to_more_ranks_splits_the_rest_into_equal_whole_batches() -> None:
    state = {
        "epoch": 0,
        "seed": 0,
        "rank": 0,
        "world_size": 1,
        "batch_size": 16,
        "num_rows": 100,
        "ranges": [[0, 96]],
        "consumed": 32,
    }
    new = order.reshard([state], 2, batch_size=8)
    assert [s["ranges"] for s in new] == [[[32, 64]], [[64, 96]]]
