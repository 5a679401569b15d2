"""Run a function on gloo ranks (forked processes on loopback); each writes its JSON."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def _rank(rank: int, fn: Callable[[int, int], Any], world_size: int, store: str, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world_size)
    try:
        Path(out, f"rank{rank}.json").write_text(json.dumps(fn(rank, world_size)))
    finally:
        dist.destroy_process_group()


def on_ranks(
    fn: Callable[[int, int], Any], tmp_path: Path, world_size: int, timeout_s: float = 90
) -> list[Any]:
    """fn(rank, world_size) on `world_size` gloo ranks; returns what each returned (JSON)."""
    # fork: the ranks need no re-import of torch, so this costs about a second.
    ctx = mp.start_processes(
        _rank,
        args=(fn, world_size, str(tmp_path / "store"), str(tmp_path)),
        nprocs=world_size,
        join=False,
        start_method="fork",
    )
    deadline = time.monotonic() + timeout_s
    try:
        while not ctx.join(timeout=1):
            assert time.monotonic() < deadline, f"gloo ranks did not finish in {timeout_s} s"
    finally:
        for proc in ctx.processes:
            if proc.is_alive():
                proc.kill()
    return [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(world_size)]


def on_two_ranks(fn: Callable[[int, int], Any], tmp_path: Path, timeout_s: float = 90) -> list[Any]:
    """fn(rank, world_size) on two gloo ranks; returns what each returned (JSON)."""
    return on_ranks(fn, tmp_path, 2, timeout_s)
