"""Counts summed over ranks: each rank's token count differs (its batch is padded to its
own longest row), so the job's tokens/s is the sum, not rank 0's count x world size."""

from __future__ import annotations

from pathlib import Path

import torch

from deepyard.testing.gloo import on_two_ranks
from deepyard.train.dist import sum_over_ranks

CPU = torch.device("cpu")


def test_one_process_keeps_its_count() -> None:
    assert sum_over_ranks(37, CPU) == 37


def _rank(rank: int, world_size: int) -> int:
    return sum_over_ranks([120, 95][rank], CPU)


def test_two_gloo_ranks_get_the_sum(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("GLOO_SOCKET_IFNAME", "lo")
    assert on_two_ranks(_rank, tmp_path) == [215, 215]
