"""A ZeRO stage 0 tensor-parallel checkpoint cut anew for another tensor degree.

Under ZeRO stages 1 and 2 DeepSpeed's universal format moves tensor slices (see
`relayout`). Under stage 0 there are no ZeRO partitions for it to read: each tensor rank's
`mp_rank_<t>_model_states.pt` holds its slices of the module and the torch optimizer's
state of those slices, a list by parameter position (Adam's exp_avg and exp_avg_sq have
the parameter's shape). Here the model's tensor plan joins each tensor's slices whole
(`tensor_parallel.merge_shards`) and cuts it again for the new degree, the fused qkv part
by part, into one file per new tensor rank, which the engine then loads as if saved so.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from deepyard.checkpoint.split_export import meta_model
from deepyard.errors import CheckpointError
from deepyard.models import tensor_plans
from deepyard.models.tensor_plans import Split

MOMENTS = ("exp_avg", "exp_avg_sq")  # per-parameter optimizer tensors that are sliced


def model_file(tp_rank: int) -> str:
    return f"mp_rank_{tp_rank:02d}_model_states.pt"


def reslice(folder: Path, manifest: dict[str, Any], tensor: int, out: Path) -> None:
    """Write into `out` the checkpoint in `folder` (one tag, ZeRO stage 0, saved at some
    tensor degree) as `tensor` tensor ranks would have saved it."""
    from deepyard.train.tensor_parallel import merge_shards

    saved_tensor = (manifest.get("parallelism") or {}).get("tensor", 1)
    model_name = manifest["spec"]["model"]["name"]
    files = [_load(folder / model_file(rank)) for rank in range(saved_tensor)]
    whole = merge_shards(model_name, [f["module"] for f in files])
    names = [name for name, _ in meta_model(manifest).named_parameters()]
    optimizer = files[0].get("optimizer")
    if not isinstance(optimizer, dict) or not {"state", "param_groups"} <= optimizer.keys():
        raise CheckpointError(
            f"{folder}: the optimizer state is not a torch optimizer's (ZeRO stage 0 with "
            "fp16 keeps it in DeepSpeed's own format), so it cannot be cut for another "
            "tensor degree; resume with the layout it was saved with, or start over with "
            "--restart"
        )
    positions = [i for group in optimizer["param_groups"] for i in group["params"]]
    _check_positions(folder, model_name, names, positions, files)
    moments = {
        key: merge_shards(
            model_name,
            [{names[i]: f["optimizer"]["state"][i][key] for i in positions} for f in files],
        )
        for key in MOMENTS
    }
    out.mkdir(parents=True, exist_ok=True)
    kept = {key: value for key, value in files[0].items() if key != "universal_checkpoint_info"}
    for rank in range(tensor):
        cut = {key: slices(model_name, moment, tensor, rank) for key, moment in moments.items()}
        state = {
            i: {**optimizer["state"][i], **{key: cut[key][names[i]] for key in MOMENTS}}
            for i in positions
        }
        torch.save(
            {
                **kept,
                "module": slices(model_name, whole, tensor, rank),
                "optimizer": {**optimizer, "state": state},
                "mp_world_size": tensor,
                "checkpoint_parallel_dimensions": {"pp_degree": 1, "tp_degree": tensor},
            },
            out / model_file(rank),
        )


def _check_positions(
    folder: Path, model_name: str, names: list[str], positions: list[int], files: list[Any]
) -> None:
    """The optimizer holds one state per parameter, in the model's parameter order (the
    order it was built with), each shaped like the parameter's slice."""
    module, state = files[0]["module"], files[0]["optimizer"]["state"]
    fits = sorted(positions) == list(range(len(names))) and all(
        i in state and state[i]["exp_avg"].shape == module[names[i]].shape for i in positions
    )
    if not fits:
        raise CheckpointError(
            f"{folder}: the optimizer state of the ZeRO stage 0 checkpoint does not line up "
            f"with the parameters of model {model_name}, so it cannot be cut for another "
            "tensor degree; resume with the layout it was saved with, or start over with "
            "--restart"
        )


def slices(
    model_name: str, whole: Mapping[str, torch.Tensor], tensor: int, rank: int
) -> dict[str, torch.Tensor]:
    """Rank `rank`'s slices of the whole model state `whole` at tensor degree `tensor`:
    what AutoTP gives that rank (the inverse of `tensor_parallel.merge_shards`)."""
    return {name: _slice(model_name, name, value, tensor, rank) for name, value in whole.items()}


def _slice(model_name: str, name: str, value: torch.Tensor, tensor: int, rank: int) -> torch.Tensor:
    if tensor == 1:
        return value
    split = _split_of(model_name, name)
    if split is None or (split.kind == "row" and name.endswith(".bias")):
        return value  # whole on every rank
    if split.kind == "row":
        return value.chunk(tensor, dim=1)[rank].clone()
    # column: by output, part by part (q, k, v each cut alike)
    return torch.cat([part.chunk(tensor)[rank] for part in value.chunk(split.parts)]).clone()


def _split_of(model_name: str, name: str) -> Split | None:
    plan = tensor_plans.get(model_name)
    if plan is None:
        return None
    weight = name.removesuffix(".bias") + ".weight" if name.endswith(".bias") else name
    return next((s for s in plan.splits if re.fullmatch(s.pattern, weight)), None)


def _load(path: Path) -> Any:
    if not path.exists():
        raise CheckpointError(f"{path} is missing from the checkpoint")
    return torch.load(path, map_location="cpu", weights_only=False)
