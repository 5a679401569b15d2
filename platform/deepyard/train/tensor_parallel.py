"""Tensor parallelism through DeepSpeed AutoTP, for models with a tensor-parallel plan
(deepyard.models.tensor_plans; the GPT has one).

Data flow: spec (`parallelism.tensor: T`) → `check()` when the spec is validated → on
every rank, after models.build: `with_tensor_parallel(config, name, args, model, T)` on
the DeepSpeed config → `deepspeed.initialize` builds the (data, tensor) process groups and
replaces each Linear the plan names by a shard of it (column or row parallel), before
ZeRO partitions the optimizer state over the data-parallel group. The optimizer built
before `initialize` keeps working: AutoTP shards the parameters in place.

Rank layout (DeepSpeed's device mesh of shape (W / T, T), row-major): global rank
r = dp_rank x T + tp_rank. One tensor-parallel group is T consecutive ranks
([0, 1], [2, 3], ... for T=2); one data-parallel group is every T-th rank ([0, 2],
[1, 3]). All ranks of one tensor-parallel group must read the same batches: data is
sharded by `data_parallel_coords()`, not by the global rank (DeepSpeed checks the first
batch and stops with "Data inconsistency within the TP group" otherwise). Consecutive
ranks keep one tensor-parallel group on one node when ranks are numbered node by node.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from deepyard.models import tensor_plans
from deepyard.models.tensor_plans import Split, TensorPlan
from deepyard.train.topology import Layout


def check(model_name: str, args: dict[str, Any], tensor: int) -> None:
    """Spec-time check of `parallelism.tensor` against the model: it has a plan, and
    every width the plan splits divides by `tensor`. Raises ValueError naming the field
    and the fix. The vocabulary needs no check: the embedding and the LM head tied to it
    stay whole on every rank. With pipeline stages too, the same plan splits each stage's
    layers (deepyard.train.stage_tensor)."""
    if tensor == 1:
        return
    plan = _plan(model_name, tensor)
    for field, width in plan.widths(args).items():
        if width % tensor:
            raise ValueError(
                f"{field}={width} for model {model_name} must divide by "
                f"parallelism.tensor={tensor} (each rank holds 1/{tensor} of it); use "
                f"tensor: {_divisor_choices(width)}, or set {field} to a multiple of {tensor}"
            )


def with_tensor_parallel(
    config: dict[str, Any], model_name: str, args: dict[str, Any], model: nn.Module, tensor: int
) -> dict[str, Any]:
    """deepyard's DeepSpeed `config` made ready for `tensor`-way tensor parallelism of
    `model` (built, not yet given to `deepspeed.initialize`): `deepspeed_section()`
    merged in, and `train_batch_size` left out. DeepSpeed checks that number against all
    W ranks when the engine starts (it has no tensor-parallel groups yet), but ZeRO-3
    checks it again against the W / T data-parallel ranks, so no one value passes both;
    given the micro-batch and the accumulation steps it derives it each time. `config` is
    returned unchanged when tensor is 1."""
    if tensor == 1:
        return config
    given = config.get("tensor_parallel", {})
    if given.get("autotp_size", tensor) != tensor:
        raise ValueError(
            f"deepspeed.tensor_parallel.autotp_size={given['autotp_size']} contradicts "
            f"parallelism.tensor={tensor}; remove it from the deepspeed block"
        )
    section = deepspeed_section(model_name, args, model, tensor)["tensor_parallel"]
    merged = {key: value for key, value in config.items() if key != "train_batch_size"}
    merged["tensor_parallel"] = {**given, **section}
    return merged


def deepspeed_section(
    model_name: str, args: dict[str, Any], model: nn.Module, tensor: int
) -> dict[str, Any]:
    """The entries to merge into the DeepSpeed config for `tensor`-way tensor parallelism
    of `model` (built from model.name and model.args, before `deepspeed.initialize`);
    {} when tensor is 1.

    Runs `check()` again, then checks the built model against its plan (every split names
    parameters, none of them shared, every split width divisible by `tensor`), so that a
    plan that no longer fits its model fails here instead of leaving layers whole.
    """
    if tensor == 1:
        return {}
    check(model_name, args, tensor)
    plan = _plan(model_name, tensor)
    _verify(model_name, plan, model, tensor)
    return {
        "tensor_parallel": {
            "autotp_size": tensor,
            # Only the plan's layers are split: no name heuristics for Hugging Face models.
            "partition_config": {
                "use_default_specs": False,
                "layer_specs": [_layer_spec(split) for split in plan.splits],
            },
        }
    }


def verified_plan(model_name: str, model: nn.Module, tensor: int) -> TensorPlan:
    """The plan of `model_name`, checked against the built (or meta) `model` as
    `deepspeed_section` checks it; for tensor splits inside pipeline stages."""
    plan = _plan(model_name, tensor)
    _verify(model_name, plan, model, tensor)
    return plan


def data_parallel_coords(rank: int, world: int, tensor: int) -> tuple[int, int]:
    """(dp_rank, dp_size) of global `rank`: the data shard it reads and how many there
    are. Ranks of one tensor-parallel group get the same dp_rank."""
    layout = _layout(world, tensor)
    if not 0 <= rank < world:
        raise ValueError(f"rank {rank} is outside a world of {world} ranks")
    return layout.replica(rank), layout.data


def dropout_seed(seed: int, rank: int, world: int, tensor: int) -> int:
    """The seed of global `rank`'s random draws while training (dropout): one per
    data-parallel rank, not per global rank. The ranks of one tensor-parallel group hold
    the same activations outside the split layers (the residual stream, the embedding
    output); drawing different dropout masks there would make those activations, and
    then the weights every rank holds whole, drift apart without any error. The training
    loop seeds through the same `Layout.dropout_seed`."""
    return _layout(world, tensor).dropout_seed(seed, rank)


def tensor_parallel_groups(world: int, tensor: int) -> list[list[int]]:
    """The global ranks of each tensor-parallel group (they split one model replica)."""
    _check_world(world, tensor)
    return [list(range(start, start + tensor)) for start in range(0, world, tensor)]


def data_parallel_groups(world: int, tensor: int) -> list[list[int]]:
    """The global ranks of each data-parallel group (they hold the same shard of the
    weights and all-reduce its gradients; ZeRO partitions over them)."""
    _check_world(world, tensor)
    return [list(range(tp_rank, world, tensor)) for tp_rank in range(tensor)]


def merge_shards(
    model_name: str, shards: Sequence[Mapping[str, torch.Tensor]]
) -> dict[str, torch.Tensor]:
    """The whole model's state dict from the state dicts of one tensor-parallel group's
    ranks, in rank order: e.g. the "module" of each mp_rank_XX_model_states.pt of a
    checkpoint saved under ZeRO 0, 1 or 2 (fp32), for export or a one-process eval.
    Column splits are joined by output (part by part), row splits by input; what every
    rank holds whole must be equal on all of them, or the ranks drifted apart."""
    if len(shards) == 1:
        return dict(shards[0])
    plan = _plan(model_name, len(shards))
    merged = {}
    for name, first in shards[0].items():
        parts = [shard[name] for shard in shards]
        split = _split_of(plan, name)
        if split is None or (split.kind == "row" and name.endswith(".bias")):
            for rank, part in enumerate(parts):
                if not torch.equal(part, first):
                    raise ValueError(
                        f"{name} differs between tensor-parallel ranks 0 and {rank}, though "
                        "every rank holds it whole: the ranks drifted apart (did they read "
                        "the same batches and draw the same dropout masks?)"
                    )
            merged[name] = first
        elif split.kind == "column":
            blocks = [part.chunk(split.parts) for part in parts]  # (rank, part)
            merged[name] = torch.cat(
                [torch.cat(per_part) for per_part in zip(*blocks, strict=True)]
            )
        else:
            merged[name] = torch.cat(parts, dim=1)
    return merged


def _split_of(plan: TensorPlan, name: str) -> Split | None:
    """The split a state-dict entry belongs to: its weight's, or its layer's for a bias."""
    weight = name.removesuffix(".bias") + ".weight" if name.endswith(".bias") else name
    return next((s for s in plan.splits if re.fullmatch(s.pattern, weight)), None)


def _plan(model_name: str, tensor: int) -> TensorPlan:
    plan = tensor_plans.get(model_name)
    if plan is None:
        supported = ", ".join(tensor_plans.names()) or "none"
        raise ValueError(
            f"parallelism.tensor={tensor}, but model {model_name} has no tensor-parallel "
            f"plan (models that have one: {supported}); use parallelism.tensor: 1 and "
            "data parallelism (ZeRO) for it"
        )
    return plan


def _layout(world: int, tensor: int) -> Layout:
    """The job's rank layout without pipeline stages (deepyard.train.topology)."""
    _check_world(world, tensor)
    return Layout(world // tensor, tensor=tensor)


def _check_world(world: int, tensor: int) -> None:
    if tensor < 1 or world % tensor:
        raise ValueError(
            f"parallelism.tensor={tensor} does not divide {world} workers; use "
            f"tensor: {_divisor_choices(world)}"
        )


def _divisor_choices(value: int) -> str:
    divisors = [str(d) for d in range(1, value + 1) if value % d == 0]
    return ", ".join(divisors[:-1]) + f" or {divisors[-1]}" if len(divisors) > 1 else "1"


def _verify(model_name: str, plan: TensorPlan, model: nn.Module, tensor: int) -> None:
    named = list(model.named_parameters(remove_duplicate=False))
    owners = Counter(id(parameter) for _, parameter in named)
    for split in plan.splits:
        matched = [(n, p) for n, p in named if re.fullmatch(split.pattern, n)]
        if not matched:
            raise ValueError(
                f"the tensor-parallel plan of model {model_name} splits {split.pattern!r}, "
                "which names no parameter of the built model; the plan in "
                "deepyard.models no longer fits the model (a deepyard bug: fix the plan)"
            )
        for name, parameter in matched:
            if parameter.dim() != 2 or owners[id(parameter)] > 1:
                raise ValueError(
                    f"model {model_name}: {name} is not a Linear weight of its own (shape "
                    f"{tuple(parameter.shape)}, shared by {owners[id(parameter)]} modules); "
                    "a tensor-parallel plan may only split unshared Linear weights"
                )
            width = _split_width(split, parameter.shape)
            if width % tensor:
                raise ValueError(
                    f"model {model_name}: {name} splits {width} features over "
                    f"parallelism.tensor={tensor}, which does not divide them; use tensor: "
                    f"{_divisor_choices(width)}"
                )


def _split_width(split: Split, shape: tuple[int, ...]) -> int:
    """The features a split cuts: a column split's outputs (per fused part), a row
    split's inputs."""
    return shape[0] // split.parts if split.kind == "column" else shape[1]


def _layer_spec(split: Split) -> dict[str, Any]:
    """One AutoTP layer spec. AutoTP matches with re.match on "<module>.weight" names."""
    spec: dict[str, Any] = {"patterns": [f"^(?:{split.pattern})$"], "partition_type": split.kind}
    if split.parts > 1:
        # View the weight as (parts, rows/parts, in) and split dim 0 of each part alike.
        spec.update(shape=[split.parts, -1], partition_dim=0)
    return spec
