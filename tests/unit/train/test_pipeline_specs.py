"""The pipeline builder's layer specs: layers that share a weight become one DeepSpeed
TiedLayerSpec (the GPT's token lookup and head, holding nothing but that weight); the
others stay plain modules; and the names a PipelineModule gives the model's weights are
known without building one (they carry checkpoints between layouts)."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
from deepspeed.pipe import TiedLayerSpec

from deepyard import models
from deepyard.models.registry import Vocab
from deepyard.train.dist import WorkerContext, free_port, init_process_group
from deepyard.train.pipeline import stage_names, stage_specs
from deepyard.train.topology import Layout


def test_the_gpt_head_is_tied_to_its_embedding() -> None:
    model = models.build("gpt", {"size": "tiny"}, (16,), 2, Vocab(300, 0))
    layers = model.layers()
    specs = stage_specs(layers)
    first, last = specs[0], specs[-1]
    assert isinstance(first, TiedLayerSpec) and isinstance(last, TiedLayerSpec)
    assert first.key == last.key and first.tied_weight_attr == ["weight"]
    # Each stage that shares the layer keeps a copy of all it holds, and only the tied
    # weight's gradients are summed between them: the position table stays out of it.
    assert [name for name, _ in layers[0].named_parameters()] == ["weight"]
    assert first.build() is layers[0]  # the model's own module: its initial weights
    assert last.build() is layers[0] and last.forward_fn is not None
    assert specs[1:-1] == layers[1:-1]  # blocks and norm: plain modules
    x = torch.randn(2, 16, 64)
    torch.testing.assert_close(last.forward_fn(last.build(), x), layers[-1](x))


def test_untied_layers_stay_plain_modules() -> None:
    layers = models.build("cnn", {}, (1, 28, 28), 10).layers()
    assert stage_specs(layers) == layers


def test_the_layout_matches_deepspeeds_pipeline_grid() -> None:
    """DeepSpeed's PipeDataParallelTopology numbers ranks with the data axis fastest."""
    from deepspeed.runtime.pipe.topology import PipeDataParallelTopology

    layout = Layout(data=3, pipeline=2)
    topology = PipeDataParallelTopology(num_pp=2, num_dp=3)
    for rank in range(6):
        coord = topology.get_coord(rank)
        assert (layout.stage(rank), layout.replica(rank)) == (coord.pipe, coord.data)
        assert layout.counts(rank) == (coord.pipe == 0)


@pytest.mark.parametrize(
    ("name", "shape", "vocab"),
    [
        ("gpt", (16,), Vocab(300, 0)),
        ("transformer", (16,), Vocab(300, 0)),
        ("cnn", (1, 28, 28), None),
    ],
)
def test_stage_names_are_the_names_a_pipeline_module_gives(
    name: str, shape: tuple[int, ...], vocab: Vocab | None
) -> None:
    """Every entry of the model's state (a tied weight under each of its names) maps onto
    an entry of the PipelineModule built from it, holding the same tensor, and every
    entry of that module is mapped to."""
    from deepspeed.pipe import PipelineModule

    model = models.build(name, {"size": "tiny"} if name == "gpt" else {}, shape, 2, vocab)
    threads = torch.get_num_threads()
    init_process_group(WorkerContext(0, 1, 0, "127.0.0.1", free_port()), 1)
    try:
        module = PipelineModule(layers=stage_specs(model.layers()), num_stages=1)
    finally:
        dist.destroy_process_group()
        torch.set_num_threads(threads)
    names, staged = stage_names(model), module.state_dict(keep_vars=True)
    whole = model.state_dict(keep_vars=True)
    assert names.keys() == whole.keys()
    assert set(names.values()) == staged.keys()
    for whole_name, staged_name in names.items():
        assert staged[staged_name] is whole[whole_name], whole_name
