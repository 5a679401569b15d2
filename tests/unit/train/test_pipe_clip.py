"""Gradient clipping of a pipeline without ZeRO (deepyard.train.pipe_clip): the norm over
two stages on two gloo ranks is the whole model's, and each stage's gradients are scaled
as one process scales them."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from deepyard.testing.gloo import on_two_ranks
from deepyard.train import pipe_clip

GRADS = [[3.0, 4.0], [12.0], [5.0]]  # stage 0: one weight; stage 1: a weight, a tied copy


def _stage(rank: int, world: int) -> dict[str, Any]:
    params = [nn.Parameter(torch.zeros(len(g))) for g in GRADS]
    for parameter, grad in zip(params, GRADS, strict=True):
        parameter.grad = torch.tensor(grad)
    mine = [params[0]] if rank == 0 else params[1:]
    if rank == 1:
        mine[1].ds_pipe_replicated = True  # type: ignore[attr-defined]
    grid = SimpleNamespace(
        get_slice_parallel_rank=lambda: 0, get_model_parallel_group=lambda: dist.group.WORLD
    )
    engine = SimpleNamespace(
        grid=grid,
        module=SimpleNamespace(parameters=lambda: iter(mine)),
        gradient_clipping=lambda: 6.5,
        is_pipe_parallel=True,
        zero_optimization=lambda: 0,
    )
    pipe_clip.install(engine)
    norm = engine.clip_fp32_gradients()  # type: ignore[attr-defined]
    return {"norm": float(norm), "grads": [p.grad.tolist() for p in mine if p.grad is not None]}


def test_the_norm_spans_the_stages_and_counts_a_tied_copy_once(tmp_path: Path) -> None:
    first, second = on_two_ranks(_stage, tmp_path)
    assert first["norm"] == second["norm"] == 13.0  # sqrt(3² + 4² + 12²); the copy not
    scale = 6.5 / (13.0 + 1e-6)
    assert torch.allclose(torch.tensor(first["grads"][0]), torch.tensor([3.0, 4.0]) * scale)
    assert torch.allclose(torch.tensor(second["grads"][0]), torch.tensor([12.0]) * scale)


def test_only_pipelines_without_zero_get_it() -> None:
    for is_pipe, zero in ((True, 1), (False, 0)):
        engine = SimpleNamespace(is_pipe_parallel=is_pipe, zero_optimization=lambda z=zero: z)
        pipe_clip.install(engine)
        assert not hasattr(engine, "clip_fp32_gradients")
