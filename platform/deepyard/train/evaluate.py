"""Evaluation over the whole eval split, exact across ranks: every rank runs the task's
`eval_batch` on its rows; the sums are reduced over ranks and the per-row tensors
gathered from all of them (rank after rank), then the task's `finish` makes metrics."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist

from deepyard.data import TensorData, eval_batches

if TYPE_CHECKING:
    from deepyard.tasks import Task


@dataclass(frozen=True)
class Evaluation:
    """`metrics`: scalars (the task's `metrics`, plus loss and num_samples).
    `classes`: a per-class report where the task has classes (precision, recall, f1,
    support, roc_auc, confusion), else None.
    `images`: PNG pictures by folder name (e.g. "samples": an autoencoder's
    reconstructions, a GAN's samples), made on rank 0; the run keeps each evaluation's
    as RUN_DIR/<folder>/step_<step>.png."""

    metrics: dict[str, float]
    classes: dict[str, Any] | None = None
    images: dict[str, bytes] = field(default_factory=dict)


@torch.no_grad()
def run_eval(
    task: Task,
    engine: Any,
    data: TensorData,
    rank: int,
    world_size: int,
    batch_size: int,
    device: torch.device,
    dtype: torch.dtype,
) -> Evaluation:
    role = _model_parallel_role(engine)
    if role is not None:
        return _run_model_parallel_eval(task, engine, data, batch_size, device, dtype, role)
    distributed = dist.is_initialized() and world_size > 1
    if distributed:
        # Ranks' batch-norm statistics drift apart in training, and a checkpoint keeps rank
        # 0's (ZeRO 0-2): evaluate every rank with rank 0's, as DDP does, so a resumed run
        # scores like an uninterrupted one.
        for buffer in getattr(engine, "module", engine).buffers():
            dist.broadcast(buffer.data, src=0)
    engine.eval()
    scored = _score_shard(task, engine, data, rank, world_size, batch_size, device, dtype)
    engine.train()
    sums, gathered, mask_all = scored
    if distributed:
        names = sorted(gathered)
        *values, mask_all = _gather([gathered[n] for n in names] + [mask_all], device)
        gathered = dict(zip(names, values, strict=True))
        sums = _all_reduce(sums, device)
    return task.finish(sums, {n: v[mask_all] for n, v in gathered.items()}, data)


Scored = tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], torch.Tensor]
Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # inputs, labels, row mask
Score = Callable[[Any, torch.Tensor, torch.Tensor, torch.Tensor], None]
# Runs batches through a split model; calls the scorer with each batch's outputs where
# this rank sees them (a pipeline's last stage).
Stream = Callable[[Iterator[Batch], Score], None]


def _score_shard(
    task: Task,
    engine: Any,
    data: TensorData,
    shard: int,
    shards: int,
    batch_size: int,
    device: torch.device,
    dtype: torch.dtype,
    stream: Stream | None = None,
) -> Scored:
    """This shard's sums, rows and row mask, from the outputs of the engine's forward on
    each batch, or of `stream` (the batches it scores)."""
    sums: dict[str, torch.Tensor] = {}
    rows: dict[str, list[torch.Tensor]] = {}
    masks: list[torch.Tensor] = []

    def score(outputs: Any, batch: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor) -> None:
        part = task.eval_batch(outputs, batch, labels, mask, **pad_argument(data.pad_id))
        for name, value in part.sums.items():
            sums[name] = sums.get(name, 0) + value.detach().double().cpu()
        for name, value in part.rows.items():
            rows.setdefault(name, []).append(value.detach().cpu())
        masks.append(mask.cpu())

    batches = (
        # Token ids stay integers; features take the training precision.
        (
            inputs.to(device) if inputs.dtype == torch.long else inputs.to(device, dtype),
            labels.to(device),
            mask.to(device),
        )
        for inputs, labels, mask in eval_batches(data, shard, shards, batch_size)
    )
    if stream is None:
        for batch, labels, mask in batches:
            score(engine(batch), batch, labels, mask)
    else:
        stream(batches, score)
    mask_all = torch.cat(masks) if masks else torch.zeros(0, dtype=torch.bool)
    return sums, {name: torch.cat(parts) for name, parts in rows.items()}, mask_all


@dataclass(frozen=True)
class _Role:
    """A rank's part in evaluating a model split over ranks: the shard of rows its replica
    reads, whether its outputs are scored, and how it gets them."""

    replica: int
    replicas: int
    scores: bool
    stream: Stream | None = None  # None: every rank runs the engine's forward per batch
    buffers_from: tuple[int, Any] | None = None  # (source rank, group) for batch-norm stats


def _model_parallel_role(engine: Any) -> _Role | None:
    """None for a model every rank holds whole (data parallelism)."""
    from deepyard.train import pipeline, tensor_parallel

    if pipeline.is_pipeline(engine):
        grid = engine.grid
        first = grid.stage_to_global(stage_id=grid.get_stage_id(), data=0)
        return _Role(
            grid.data_parallel_id,
            grid.data_parallel_size,
            # the only stage that sees outputs; its tensor ranks all see the same ones
            engine.is_last_stage() and grid.get_slice_parallel_rank() == 0,
            partial(pipeline.eval_stream, engine),
            (first, grid.get_data_parallel_group()),
        )
    tensor = getattr(engine, "autotp_size", lambda: 1)()
    if tensor > 1:
        rank, world = dist.get_rank(), dist.get_world_size()
        replica, replicas = tensor_parallel.data_parallel_coords(rank, world, tensor)
        # Every rank of a group computes the same outputs (the row-parallel layers
        # all-reduce): the group's first rank scores them. Models with a tensor plan hold
        # no buffers, so there are no statistics to align.
        return _Role(replica, replicas, rank % tensor == 0)
    return None


def _run_model_parallel_eval(
    task: Task,
    engine: Any,
    data: TensorData,
    batch_size: int,
    device: torch.device,
    dtype: torch.dtype,
    role: _Role,
) -> Evaluation:
    """Every replica runs its shard of rows (all its ranks take part in each forward);
    the scoring ranks' sums and rows go to every rank as objects (the other ranks may not
    know their shapes), so rank 0 reports the exact metrics."""
    if role.buffers_from is not None and role.replicas > 1:  # rank 0's statistics (above)
        source, group = role.buffers_from
        for buffer in engine.module.buffers():
            dist.broadcast(buffer.data, src=source, group=group)
    engine.eval()
    scored = _score_shard(
        task, engine, data, role.replica, role.replicas, batch_size, device, dtype, role.stream
    )
    engine.train()
    everyone: list[Scored | None] = [None] * dist.get_world_size()
    dist.all_gather_object(everyone, scored if role.scores else None)
    parts = [part for part in everyone if part is not None]  # in replica order
    sums: dict[str, torch.Tensor] = {}
    for part_sums, _, _ in parts:
        for name, value in part_sums.items():
            sums[name] = sums.get(name, 0) + value
    mask_all = torch.cat([mask for _, _, mask in parts])
    names = parts[0][1].keys()
    gathered = {n: torch.cat([rows[n] for _, rows, _ in parts]) for n in names}
    return task.finish(sums, {n: v[mask_all] for n, v in gathered.items()}, data)


def pad_argument(pad_id: int | None) -> dict[str, int]:
    """`pad_id=` for a task's `loss` and `eval_batch` on token batches; nothing for
    features, so a task that only reads features need not take it."""
    return {} if pad_id is None else {"pad_id": pad_id}


def _all_reduce(sums: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    """Sums over ranks, in one collective; NCCL reduces device tensors only."""
    names = sorted(sums)
    if not names:
        return {}
    flat = [torch.as_tensor(sums[n]).reshape(-1) for n in names]
    packed = torch.cat(flat).to(device)
    dist.all_reduce(packed)
    out, start = {}, 0
    for name, part in zip(names, flat, strict=True):
        out[name] = packed[start : start + part.numel()].cpu().reshape(sums[name].shape)
        start += part.numel()
    return out


def _gather(tensors: list[torch.Tensor], device: torch.device) -> list[torch.Tensor]:
    """Every rank's rows, rank after rank. Every rank holds the same number of rows (the
    eval shards are padded to equal length, and masked)."""
    out = []
    for tensor in tensors:
        local = tensor.to(device, torch.uint8 if tensor.dtype == torch.bool else tensor.dtype)
        parts = [torch.empty_like(local) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, local)
        out.append(torch.cat(parts).cpu().to(tensor.dtype))
    return out
