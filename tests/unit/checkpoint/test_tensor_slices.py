"""A ZeRO stage 0 tensor-parallel checkpoint is cut anew for another tensor degree: each
rank's slices of the module and of Adam's moments are what AutoTP gives that rank (the
fused qkv part by part), joined they are the whole model again, and the rest of each
file (step, scheduler, optimizer settings) is carried over."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from deepyard.checkpoint import tensor_slices
from deepyard.errors import CheckpointError
from deepyard.models import layer_init
from deepyard.models.registry import Vocab
from deepyard.train.tensor_parallel import merge_shards

ARGS: dict[str, object] = {"n_layer": 2, "n_head": 4, "d_model": 16, "max_seq_len": 8}
VOCAB = Vocab(size=32, pad_id=0)


def whole_gpt() -> torch.nn.Module:
    return layer_init.materialise_all(layer_init.build_on_meta("gpt", ARGS, (8,), 2, VOCAB), 3)


def manifest(tensor: int) -> dict[str, Any]:
    return {
        "spec": {"model": {"name": "gpt", "args": ARGS}},
        "model_data": {"input_shape": [8], "num_classes": 2, "vocab": [VOCAB.size, 0]},
        "parallelism": {"data": 1, "pipeline": 1, "tensor": tensor},
    }


def save_as(folder: Path, model: torch.nn.Module, tensor: int) -> dict[str, Any]:
    """The files `tensor` ZeRO-0 ranks save of `model` after a step of AdamW whose moments
    are random (one generator: the replicated tensors agree between ranks)."""
    params = dict(model.named_parameters())
    generator = torch.Generator().manual_seed(0)
    moments = {
        key: {n: torch.randn(p.shape, generator=generator) for n, p in params.items()}
        for key in tensor_slices.MOMENTS
    }
    folder.mkdir(parents=True)
    for rank in range(tensor):
        cut = {k: tensor_slices.slices("gpt", v, tensor, rank) for k, v in moments.items()}
        state = {
            i: {"step": torch.tensor(5.0), **{k: cut[k][name] for k in cut}}
            for i, name in enumerate(params)
        }
        groups = [{"lr": 1e-3, "params": list(range(len(params)))}]
        saved = {
            "module": tensor_slices.slices("gpt", model.state_dict(), tensor, rank),
            "optimizer": {"state": state, "param_groups": groups},
            "lr_scheduler": {"last_epoch": 5},
            "global_steps": 5,
            "mp_world_size": tensor,
        }
        torch.save(saved, folder / tensor_slices.model_file(rank))
    return moments


def load(folder: Path, rank: int) -> Any:
    return torch.load(folder / tensor_slices.model_file(rank), weights_only=False)


def test_a_ranks_qkv_slice_holds_its_heads_of_q_k_and_v() -> None:
    qkv = whole_gpt().state_dict()["blocks.0.attn.qkv.weight"]  # (3 x 16, 16)
    q, k, v = qkv.chunk(3)
    one = tensor_slices.slices("gpt", {"blocks.0.attn.qkv.weight": qkv}, 2, 1)
    assert torch.equal(one["blocks.0.attn.qkv.weight"], torch.cat([q[8:], k[8:], v[8:]]))


@pytest.mark.parametrize("tensor", [2, 4])
def test_slices_joined_are_the_whole_model(tensor: int) -> None:
    state = whole_gpt().state_dict()
    shards = [tensor_slices.slices("gpt", state, tensor, rank) for rank in range(tensor)]
    assert shards[0]["blocks.1.mlp.2.weight"].shape == (16, 64 // tensor)  # by input
    assert shards[0]["blocks.1.mlp.2.bias"].shape == (16,)  # whole
    merged = merge_shards("gpt", shards)
    assert merged.keys() == state.keys()
    for name, tensor_ in state.items():
        assert torch.equal(merged[name], tensor_), name


@pytest.mark.parametrize(("before", "after"), [(2, 1), (1, 2), (2, 4), (4, 2)])
def test_a_zero_0_checkpoint_is_cut_for_another_tensor_degree(
    tmp_path: Path, before: int, after: int
) -> None:
    model = whole_gpt()
    moments = save_as(tmp_path / "saved", model, before)
    tensor_slices.reslice(tmp_path / "saved", manifest(before), after, tmp_path / "out")

    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        tensor_slices.model_file(rank) for rank in range(after)
    ]
    files = [load(tmp_path / "out", rank) for rank in range(after)]
    for rank, saved in enumerate(files):
        expected = tensor_slices.slices("gpt", model.state_dict(), after, rank)
        assert saved["module"].keys() == expected.keys()
        assert all(torch.equal(saved["module"][n], t) for n, t in expected.items())
        assert saved["mp_world_size"] == after and saved["global_steps"] == 5
        assert saved["lr_scheduler"] == {"last_epoch": 5}
    names = [name for name, _ in model.named_parameters()]
    for key, whole in moments.items():
        shards = [{n: f["optimizer"]["state"][i][key] for i, n in enumerate(names)} for f in files]
        merged = merge_shards("gpt", shards)
        assert all(torch.equal(merged[n], t) for n, t in whole.items()), key
    assert files[0]["optimizer"]["state"][0]["step"] == 5.0
    assert files[0]["optimizer"]["param_groups"][0]["lr"] == 1e-3


def test_an_optimizer_state_that_does_not_fit_the_model_is_refused(tmp_path: Path) -> None:
    save_as(tmp_path / "saved", whole_gpt(), 2)
    path = tmp_path / "saved" / tensor_slices.model_file(0)
    saved = load(tmp_path / "saved", 0)
    saved["optimizer"]["param_groups"][0]["params"].pop()
    torch.save(saved, path)
    with pytest.raises(CheckpointError, match="does not line up with the parameters"):
        tensor_slices.reslice(tmp_path / "saved", manifest(2), 1, tmp_path / "out")


def test_an_optimizer_state_in_another_format_is_refused(tmp_path: Path) -> None:
    save_as(tmp_path / "saved", whole_gpt(), 2)
    path = tmp_path / "saved" / tensor_slices.model_file(0)
    saved = load(tmp_path / "saved", 0)
    saved["optimizer"] = {"optimizer_state_dict": {}, "fp32_groups_flat": []}  # FP16_Optimizer
    torch.save(saved, path)
    with pytest.raises(CheckpointError, match="is not a torch optimizer's"):
        tensor_slices.reslice(tmp_path / "saved", manifest(2), 1, tmp_path / "out")
