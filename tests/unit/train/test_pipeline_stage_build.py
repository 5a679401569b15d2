"""A pipeline stage allocates only its own layers: on real gloo ranks, each rank's DeepSpeed
PipelineModule (deepyard.train.pipeline.build_module, from a GPT built on the meta
device) holds the parameters of its stage's layers and nothing else of the model, and
they equal, bit for bit, the same layers of the whole model as one process builds it;
the head stays tied to the embedding."""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

import pytest
import torch

from deepyard import tasks
from deepyard.models import layer_init
from deepyard.models.registry import Vocab
from deepyard.testing.gloo import on_ranks
from deepyard.testing.jobs import gpt_pipeline_spec
from deepyard.train import pipeline

ARGS: dict[str, Any] = {"n_layer": 4, "n_head": 2, "d_model": 16, "max_seq_len": 8}
VOCAB = Vocab(size=96, pad_id=0)
SEED = 7
LAYERS = 8  # token lookup, positions, 4 blocks, final norm, tied head


def _meta_gpt() -> Any:
    return layer_init.build_on_meta("gpt", ARGS, (8,), 2, VOCAB)


def _whole() -> Any:
    """The GPT as a one-process run builds it (deepyard.train.loop._build_model)."""
    return layer_init.materialise_all(_meta_gpt(), SEED)


def _stage(rank: int, world: int, stages: int, partition: str, out: str) -> dict[str, Any]:
    from deepyard.train.dist import WorkerContext, init_process_group

    os.environ["GLOO_SOCKET_IFNAME"] = "lo"
    init_process_group(WorkerContext(rank, world, rank, "127.0.0.1", 0), cpus=1)
    model = _meta_gpt()
    task = tasks.get("language-modeling")
    job = gpt_pipeline_spec(ARGS, 8, world, stages, pipeline_partition=partition, seed=SEED)
    module: Any = pipeline.build_module(model, job, task, VOCAB.pad_id, (8,))
    torch.save(module.state_dict(), Path(out, f"stage{rank}.pt"))
    tied = module.tied_modules["tied_0"].weight if "tied_0" in module.tied_modules else None
    if tied is not None and module.stage_id == stages - 1:
        # The head applies the tied weight itself: its gradient lands there.
        head = module.forward_funcs[-1]
        head(torch.ones(1, 3, ARGS["d_model"])).sum().backward()
    return {
        "parts": [int(b) for b in module.parts],
        "allocated": sum(p.numel() for p in model.parameters() if not p.is_meta),
        "held": sum(p.numel() for p in module.parameters()),
        "head_is_tied": tied is not None and model.head.proj.weight is tied,
        "tied_grad": tied is not None and tied.grad is not None,
    }


def _build(tmp: Path, world: int, stages: int, partition: str) -> list[dict[str, Any]]:
    fn = functools.partial(_stage, stages=stages, partition=partition, out=str(tmp))
    return on_ranks(fn, tmp, world, 120)


def _layer_of(key: str) -> tuple[int, str]:
    """A PipelineModule state key → (the whole model's layer index, the name inside it)."""
    head, _, rest = key.partition(".")
    if head == "tied_modules":  # tied_modules.tied_<first layer>.<name>
        tie, _, rest = rest.partition(".")
        return int(tie.removeprefix("tied_")), rest
    return int(head), rest


@pytest.mark.parametrize(
    ("world", "stages", "partition"),
    [(2, 2, "parameters"), (4, 4, "layers"), (4, 2, "layers"), (2, 2, "compute")],
)
def test_each_stage_holds_only_its_layers_with_the_whole_models_weights(
    tmp_path: Path, world: int, stages: int, partition: str
) -> None:
    results = _build(tmp_path, world, stages, partition)
    whole = _whole()
    layers = whole.layers()
    parts = results[0]["parts"]
    assert parts[0] == 0 and parts[-1] == LAYERS and len(parts) == stages + 1
    replicas = world // stages
    for rank, result in enumerate(results):
        assert result["parts"] == parts  # every rank cuts alike
        stage = rank // replicas  # DeepSpeed's grid: the data axis fastest
        start, stop = parts[stage], parts[stage + 1]
        owned = set(range(start, stop)) - {LAYERS - 1}  # the head is the embedding
        if stage == stages - 1:
            owned.add(0)  # the last stage holds a copy of the tied embedding
        state = torch.load(tmp_path / f"stage{rank}.pt")
        assert {_layer_of(key)[0] for key in state} == owned, (rank, sorted(state))
        for key, tensor in state.items():
            index, name = _layer_of(key)
            assert torch.equal(tensor, layers[index].state_dict()[name]), (rank, key)
        # Nothing of the model beyond the stage was allocated on this rank.
        assert result["allocated"] == result["held"]
        assert result["held"] == sum(p.numel() for i in owned for p in layers[i].parameters())
    total = sum(p.numel() for p in whole.parameters())
    assert max(r["held"] for r in results) < total


def test_the_head_stays_tied_to_the_embedding(tmp_path: Path) -> None:
    whole = _whole()
    assert whole.head.proj.weight is whole.embed.weight  # one tensor in one process
    _, last = _build(tmp_path, 2, 2, "parameters")
    assert last["head_is_tied"] and last["tied_grad"]
    # Both ends start from the same embedding, the one-process model's.
    embed = whole.embed.weight
    for rank in (0, 1):
        state = torch.load(tmp_path / f"stage{rank}.pt")
        assert torch.equal(state["tied_modules.tied_0.weight"], embed)
