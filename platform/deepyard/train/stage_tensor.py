"""Tensor parallelism inside pipeline stages: Megatron-style column and row parallel
layers, placed by the model's tensor plan (deepyard.models.tensor_plans).

Data flow: spec (`parallelism: {pipeline: P, tensor: T}`) → deepyard.train.pipeline
builds the PipelineModule on DeepSpeed's `PipeModelDataParallelTopology` (axes pipe,
data, model; rank = stage x (D x T) + replica x T + tensor rank) → `split_stage()`
replaces, in this rank's materialised layers, each Linear the plan names by its shard →
`deepspeed.initialize` runs the pipeline engine with the grid as its `mpu`.

Why not AutoTP: the engine's `tensor_parallel` section makes DeepSpeed build its own
(data, tensor) mesh for the whole world, which the pipeline engine's grid does not share.
These layers take the grid's tensor (slice) group instead, and mark their shards
`tensor_model_parallel`, which DeepSpeed's gradient-norm code reads: a shard's norm
counts on every tensor rank, a weight held whole only on tensor rank 0, summed over the
grid's (pipe x tensor) model-parallel group. Gradients are all-reduced over the data
group only, as the pipeline engine does for every layer.

- column layer (`kind: column`): each rank computes its slice of the outputs from the
  whole input; backward all-reduces the input's gradient over the group;
- row layer (`kind: row`): each rank multiplies its slice of the input; forward
  all-reduces the partial outputs, then adds the bias (whole on every rank).
A fused weight of `parts` matrices (q, k, v) is split part by part, so each rank holds
whole heads of each, as `tensor_parallel.merge_shards` joins them back.
"""

from __future__ import annotations

import re
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from deepyard.models.tensor_plans import Split, TensorPlan
from deepyard.train import tensor_parallel


class _CopyToGroup(torch.autograd.Function):
    """Identity forward; backward sums the input gradient over the group (every rank
    fed the same input to its slice of a column layer)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, group: Any) -> torch.Tensor:
        ctx.group = group
        return x

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        grad = grad.contiguous()
        dist.all_reduce(grad, group=ctx.group)
        return grad, None


class _ReduceFromGroup(torch.autograd.Function):
    """Forward sums the partial outputs of a row layer over the group; backward passes
    the (whole, identical) output gradient to each rank's slice."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, group: Any) -> torch.Tensor:
        x = x.contiguous()
        dist.all_reduce(x, group=group)
        return x

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad, None


class ColumnParallelLinear(nn.Module):
    """This rank's rows (output features) of a Linear; weight and bias are shards."""

    def __init__(self, linear: nn.Linear, split: Split, rank: int, size: int, group: Any):
        super().__init__()
        self.group = group
        self.weight = _shard(_column_rows(linear.weight, split, rank, size), size)
        bias = linear.bias
        self.bias = None if bias is None else _shard(_column_rows(bias, split, rank, size), size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(_CopyToGroup.apply(x, self.group), self.weight, self.bias)


class RowParallelLinear(nn.Module):
    """This rank's columns (input features) of a Linear; the bias stays whole."""

    def __init__(self, linear: nn.Linear, rank: int, size: int, group: Any):
        super().__init__()
        self.group = group
        width = linear.in_features // size
        self.weight = _shard(linear.weight.detach()[:, rank * width : (rank + 1) * width], size)
        self.bias = linear.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = _ReduceFromGroup.apply(F.linear(x, self.weight), self.group)
        return y if self.bias is None else y + self.bias


def topology(pipeline: int, tensor: int, world: int) -> Any:
    """The PipelineModule's process topology: (pipe, data) as before without tensor
    parallelism (its checkpoint file names carry no model axis), else (pipe, data, model)
    with the tensor axis fastest, so one tensor group is T consecutive ranks (one node)."""
    from deepspeed.runtime.pipe import topology as ds_topology

    if tensor == 1:
        return ds_topology.PipeDataParallelTopology(num_pp=pipeline, num_dp=world // pipeline)
    return ds_topology.PipeModelDataParallelTopology(
        num_pp=pipeline, num_mp=tensor, num_dp=world // (pipeline * tensor)
    )


def with_stage_tensor(config: dict[str, Any], tensor: int) -> dict[str, Any]:
    """The DeepSpeed config of a pipeline whose stages are split `tensor` ways: each
    tensor rank sends its whole activations to its peer of the next stage. DeepSpeed's
    default under a model axis sends 1/T of them and all-gathers the rest there, but it
    keeps the partition metadata of the first micro-batch it receives
    (`pipe_partition_input_meta_cache`, DeepSpeed 0.19.8), so text batches of another
    length fail: "ProcessGroupGloo::allgather: invalid tensor size at index 0 (expected
    (1408), got (1280))". Unchanged when tensor is 1."""
    if tensor == 1:
        return config
    given = config.get("pipeline", {})
    section = {"pipe_partitioned": False, "grad_partitioned": False}
    return {**config, "pipeline": {**given, **section}}


def split_model(model_name: str, model: nn.Module, group: Any) -> list[str]:
    """`split_stage` with the plan of `model_name`, checked against the whole (meta) model
    first, so that a plan that no longer fits fails instead of leaving layers whole."""
    size = dist.get_world_size(group)
    plan = tensor_parallel.verified_plan(model_name, model, size)
    return split_stage(model, plan, group)


def split_stage(model: nn.Module, plan: TensorPlan, group: Any) -> list[str]:
    """Replace each materialised Linear of `model` whose weight the plan names by this
    rank's shard of it (layers of other stages stay on the meta device and whole).
    Returns the replaced modules' names."""
    rank, size = dist.get_rank(group), dist.get_world_size(group)
    replaced = []
    for name, module in list(model.named_modules()):
        split = _split_of(plan, f"{name}.weight")
        if split is None or not isinstance(module, nn.Linear) or module.weight.is_meta:
            continue
        if split.kind == "column":
            shard: nn.Module = ColumnParallelLinear(module, split, rank, size, group)
        else:
            shard = RowParallelLinear(module, rank, size, group)
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent), child, shard)
        replaced.append(name)
    return replaced


def _split_of(plan: TensorPlan, weight: str) -> Split | None:
    return next((s for s in plan.splits if re.fullmatch(s.pattern, weight)), None)


def _column_rows(tensor: torch.Tensor, split: Split, rank: int, size: int) -> torch.Tensor:
    """Rank `rank`'s block of rows of each of the `split.parts` fused matrices."""
    blocks = [part.chunk(size)[rank] for part in tensor.detach().chunk(split.parts)]
    return torch.cat(blocks)


def whole_numel(parameter: torch.Tensor) -> int:
    """The elements of the whole weight a parameter is a shard of (itself if whole): the
    run summary counts the model's parameters, not one rank's."""
    return parameter.numel() * int(getattr(parameter, "deepyard_tensor_shards", 1))


def _shard(tensor: torch.Tensor, size: int) -> nn.Parameter:
    parameter = nn.Parameter(tensor.clone().contiguous())
    # Read by DeepSpeed's gradient norm (runtime.utils.is_model_parallel_parameter): the
    # shard's norm counts on every tensor rank, not only on rank 0 as for whole weights.
    parameter.tensor_model_parallel = True  # type: ignore[attr-defined]
    parameter.deepyard_tensor_shards = size  # type: ignore[attr-defined]
    return parameter
