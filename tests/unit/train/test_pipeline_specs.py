"""The pipeline builder's layer specs: layers that share a weight become one DeepSpeed
TiedLayerSpec (the GPT's embedding and head); the others stay plain modules."""

from __future__ import annotations

import torch
from deepspeed.pipe import TiedLayerSpec

from deepyard import models
from deepyard.models.registry import Vocab
from deepyard.train.pipeline import stage_specs
from deepyard.train.topology import Layout


def test_the_gpt_head_is_tied_to_its_embedding() -> None:
    model = models.build("gpt", {"size": "tiny"}, (16,), 2, Vocab(300, 0))
    layers = model.layers()
    specs = stage_specs(layers)
    first, last = specs[0], specs[-1]
    assert isinstance(first, TiedLayerSpec) and isinstance(last, TiedLayerSpec)
    assert first.key == last.key and first.tied_weight_attr == ["weight"]
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
