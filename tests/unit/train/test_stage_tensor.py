"""Tensor slices inside pipeline stages (deepyard.train.stage_tensor): the rank layout is
DeepSpeed's pipe x data x model grid with the tensor axis fastest, and the column and row
shards of a GPT block compute, on two gloo ranks, the whole block's outputs and
gradients."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist

from deepyard import models
from deepyard.models import tensor_plans
from deepyard.models.registry import Vocab
from deepyard.testing.gloo import on_two_ranks
from deepyard.train import stage_tensor
from deepyard.train.topology import Layout


@pytest.mark.parametrize(("data", "pipeline", "tensor"), [(1, 2, 2), (2, 2, 2), (1, 3, 2)])
def test_the_layout_matches_deepspeeds_pipe_model_data_grid(
    data: int, pipeline: int, tensor: int
) -> None:
    """One tensor group is `tensor` consecutive ranks (one node), all ranks of a replica
    read its rows, and one rank per replica counts them."""
    layout = Layout(data, pipeline, tensor)
    world = layout.world_size
    topology = stage_tensor.topology(pipeline, tensor, world)
    assert topology.get_axis_names() == ["pipe", "data", "model"]
    for rank in range(world):
        coord = topology.get_coord(rank)
        assert (layout.stage(rank), layout.replica(rank)) == (coord.pipe, coord.data)
        assert rank % tensor == coord.model
        assert layout.counts(rank) == (coord.pipe == 0 and coord.model == 0)
    groups = topology.get_axis_comm_lists("model")
    assert groups == [list(range(s, s + tensor)) for s in range(0, world, tensor)]


def test_without_tensor_slices_the_topology_keeps_its_two_axes() -> None:
    """Checkpoint layer files of plain pipelines keep their names (no `-model_00`)."""
    assert stage_tensor.topology(2, 1, 4).get_axis_names() == ["pipe", "data"]


def test_stage_tensor_config_turns_activation_partitioning_off() -> None:
    config = {"pipeline": {"activation_checkpoint_interval": 1}, "zero_optimization": {}}
    merged = stage_tensor.with_stage_tensor(config, 2)
    assert merged["pipeline"] == {
        "activation_checkpoint_interval": 1,
        "pipe_partitioned": False,
        "grad_partitioned": False,
    }
    assert stage_tensor.with_stage_tensor(config, 1) is config


def _tiny_gpt(seed: int) -> Any:
    """A tiny GPT (2 blocks, 64 wide, 2 heads), built whole on every rank from one seed."""
    torch.manual_seed(seed)
    return models.build("gpt", {"size": "tiny", "dropout": 0.0}, (16,), 2, Vocab(50, 0))


def _apart(a: torch.Tensor | None, b: torch.Tensor | None) -> float:
    assert a is not None and b is not None
    return float((a - b).abs().max())


def _split_block_on_rank(rank: int, world: int) -> dict[str, Any]:
    torch.manual_seed(1)
    x = torch.randn(2, 16, 64)
    whole = _tiny_gpt(0)
    split = _tiny_gpt(0)
    group = dist.new_group([0, 1])
    plan = tensor_plans.get("gpt")
    assert plan is not None
    replaced = stage_tensor.split_stage(split, plan, group)
    x_whole, x_split = x.clone().requires_grad_(), x.clone().requires_grad_()
    y_whole, y_split = whole.blocks[0](x_whole), split.blocks[0](x_split)
    (y_whole**2).sum().backward()
    (y_split**2).sum().backward()
    qkv = split.blocks[0].attn.qkv
    rows = torch.cat([p.chunk(2)[rank] for p in whole.blocks[0].attn.qkv.weight.grad.chunk(3)])
    mlp_in = whole.blocks[0].mlp[2].weight.grad.chunk(2, dim=1)[rank]
    return {
        "replaced": replaced,
        "output": _apart(y_split, y_whole),
        "input_grad": _apart(x_split.grad, x_whole.grad),
        "qkv_grad": _apart(qkv.weight.grad, rows),
        "mlp2_grad": _apart(split.blocks[0].mlp[2].weight.grad, mlp_in),
        "ln_grad": _apart(split.blocks[0].ln_attn.weight.grad, whole.blocks[0].ln_attn.weight.grad),
        "qkv_shape": list(qkv.weight.shape),
        "marked": bool(qkv.weight.tensor_model_parallel),
        "whole_numel": stage_tensor.whole_numel(qkv.weight),
        "bias_marked": hasattr(split.blocks[0].attn.proj.bias, "tensor_model_parallel"),
    }


def test_column_and_row_shards_compute_the_whole_block(tmp_path: Path) -> None:
    """Each rank's block, with qkv and the MLP's first Linear split by output (qkv part by
    part) and the projections split by input, gives the whole block's output and input
    gradient; each shard's gradient is its slice of the whole weight's; the LayerNorm,
    whole on every rank, gets the whole gradient. Shards are marked for DeepSpeed's
    gradient norm; the row layers' biases, whole, are not."""
    for rank, got in enumerate(on_two_ranks(_split_block_on_rank, tmp_path)):
        assert got["replaced"] == [
            f"blocks.{b}.{layer}"
            for b in range(2)
            for layer in ("attn.qkv", "attn.proj", "mlp.0", "mlp.2")
        ], rank
        for key in ("output", "input_grad", "qkv_grad", "mlp2_grad", "ln_grad"):
            assert got[key] < 1e-5, (rank, key, got[key])
        assert got["qkv_shape"] == [3 * 32, 64]
        assert got["marked"] and got["whole_numel"] == 3 * 64 * 64
        assert not got["bias_marked"]


def test_layers_on_the_meta_device_stay_whole(tmp_path: Path) -> None:
    """Another stage's layers (meta tensors on this rank) are left alone."""

    def on_rank(rank: int, world: int) -> list[str]:
        model = _tiny_gpt(0)
        with torch.device("meta"):
            model.blocks[1] = type(model.blocks[1])(64, 2, 0.0)
        plan = tensor_plans.get("gpt")
        assert plan is not None
        return stage_tensor.split_stage(model, plan, dist.new_group([0, 1]))

    for replaced in on_two_ranks(on_rank, tmp_path):
        assert replaced == [f"blocks.0.{n}" for n in ("attn.qkv", "attn.proj", "mlp.0", "mlp.2")]
