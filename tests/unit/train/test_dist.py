"""Counts summed over ranks: each rank's token count differs (its batch is padded to its
own longest row), so the job's tokens/s is the sum, not rank 0's count x world size."""

from __future__ import annotations

import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from deepyard.train.dist import sum_over_ranks

CPU = torch.device("cpu")


def test_one_process_keeps_its_count() -> None:
    assert sum_over_ranks(37, CPU) == 37


def _rank(rank: int, world_size: int, store: str, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world_size)
    try:
        total = sum_over_ranks([120, 95][rank], CPU)
        Path(out, f"rank{rank}.txt").write_text(str(total))
    finally:
        dist.destroy_process_group()


def test_two_gloo_ranks_get_the_sum(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("GLOO_SOCKET_IFNAME", "lo")
    ctx = mp.start_processes(
        _rank,
        args=(2, str(tmp_path / "store"), str(tmp_path)),
        nprocs=2,
        join=False,
        start_method="fork",
    )
    deadline = time.monotonic() + 60
    try:
        while not ctx.join(timeout=1):
            assert time.monotonic() < deadline, "gloo ranks did not finish in 60 s"
    finally:
        for proc in ctx.processes:
            if proc.is_alive():
                proc.kill()
    assert [(tmp_path / f"rank{r}.txt").read_text() for r in range(2)] == ["215", "215"]
