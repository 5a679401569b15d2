"""`pipeline_partition: compute` cuts a model's layers where their forward FLOPs balance,
counted on the meta device: a GPT's first stage, whose token lookup costs nothing,
takes more blocks than a cut by parameters gives it, and a CNN's first stage, whose
high-resolution convolutions cost many FLOPs for few parameters, takes fewer layers; the
slowest stage and the spread between stages are never worse than by parameters. A model
whose FLOPs cannot be counted is refused with the field and the fix."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
import torch
from torch import nn

from deepyard.errors import SpecError
from deepyard.models import layer_init
from deepyard.models.registry import MINILM_VOCAB, Vocab
from deepyard.train.pipeline import stage_specs
from deepyard.train.pipeline_cut import counted_flops, cut, flops_shares, layer_flops

# The GPT of tests/integration/test_model_parallel.py, GPT-2 small, and a 3-stage CNN.
GPT = {"n_layer": 4, "n_head": 2, "d_model": 32, "max_seq_len": 32}
MODELS: dict[str, tuple[str, dict[str, Any], tuple[int, ...], int, Vocab | None]] = {
    "gpt": ("gpt", GPT, (32,), 2, MINILM_VOCAB),
    "gpt2-small": ("gpt", {"size": "small"}, (1024,), 2, Vocab(50257, 0)),
    "cnn": ("cnn", {"stages": 3}, (1, 28, 28), 10, None),
}


def _layers(key: str) -> tuple[list[nn.Module], list[int]]:
    name, args, shape, classes, vocab = MODELS[key]
    model: Any = layer_init.build_on_meta(name, args, shape, classes, vocab)
    layers = model.layers()
    return layers, layer_flops(layers, shape, vocab is not None)


def _stage_flops(bounds: list[int], flops: list[int]) -> list[int]:
    return [sum(flops[a:b]) for a, b in itertools.pairwise(bounds)]


def _blocks(layers: list[nn.Module], start: int, stop: int) -> int:
    return sum(type(layer).__name__ in ("Block", "ResidualBlock") for layer in layers[start:stop])


@pytest.mark.parametrize(
    ("key", "stages", "by_compute", "by_parameters"),
    [
        # The tied 30,522 x 32 vocabulary matrix outweighs the blocks in parameters at both
        # ends; in FLOPs the lookup is free and the head (2 x 30,522 x 32 per token) is
        # the heaviest layer: it gets a stage of its own, every block goes first.
        ("gpt", 2, [0, 7, 8], [0, 4, 8]),
        ("gpt2-small", 4, [0, 6, 10, 15, 16], [0, 2, 8, 14, 16]),
        ("cnn", 2, [0, 2, 5], [0, 3, 5]),
    ],
)
def test_compute_balances_flops_no_worse_than_parameters(
    key: str, stages: int, by_compute: list[int], by_parameters: list[int]
) -> None:
    layers, flops = _layers(key)
    specs = stage_specs(layers)
    compute = cut(specs, flops, stages, "compute")
    parameters = cut(specs, flops, stages, "parameters")
    assert (compute, parameters) == (by_compute, by_parameters)
    spent, spent_by_parameters = _stage_flops(compute, flops), _stage_flops(parameters, flops)
    assert max(spent) <= max(spent_by_parameters)  # the slowest stage sets the pace
    assert max(spent) - min(spent) <= max(spent_by_parameters) - min(spent_by_parameters)
    first = _blocks(layers, 0, compute[1]), _blocks(layers, 0, parameters[1])
    if MODELS[key][0] == "gpt":  # the free token lookup leaves room for blocks
        assert first[0] > first[1]
    else:  # the early convolutions are the expensive ones
        assert first[0] < first[1]
    shares = flops_shares(compute, flops)
    assert shares is not None and sum(shares) == pytest.approx(1.0)


def test_the_counts_are_the_whole_models_flops_and_repeat_exactly() -> None:
    """Layer by layer, the counts add up to the whole model's forward FLOPs (matmuls only,
    as the GPT's analytic count has them), and a second count gives the same integers:
    every rank cuts alike without talking to the others."""
    name, args, shape, classes, vocab = MODELS["gpt"]
    model: Any = layer_init.build_on_meta(name, args, shape, classes, vocab)
    flops = layer_flops(model.layers(), shape, True)
    assert sum(flops) == model.flops_per_sample(shape)
    assert flops[:2] == [0, 0] and flops[-1] == 2 * 32 * MINILM_VOCAB.size * 32
    assert layer_flops(model.layers(), shape, True) == flops
    assert all(p.is_meta for p in model.parameters())  # nothing was allocated


class _DataDependent(nn.Module):
    """Keeps the rows whose first feature is positive: how many depends on the values,
    which the meta device does not have."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x[: int((x[:, 0] > 0).sum().item())])


def _meta(*layers: nn.Module) -> list[nn.Module]:
    return [layer.to("meta") for layer in layers]


@pytest.mark.parametrize(
    ("layers", "why"),
    [
        (lambda: _meta(nn.Linear(4, 4), _DataDependent()), "layer 1 (_DataDependent)"),
        (lambda: _meta(nn.ReLU(), nn.Tanh()), "count no matrix multiplications"),
    ],
    ids=["data-dependent", "no-matmuls"],
)
def test_a_model_whose_flops_cannot_be_counted_is_refused_for_compute(
    layers: Any, why: str
) -> None:
    with pytest.raises(SpecError) as refused:
        counted_flops("odd", layers(), (4,), False, "compute")
    message = str(refused.value)
    assert "parallelism.pipeline_partition=compute" in message and why in message
    assert "model 'odd'" in message
    assert "set pipeline_partition: parameters or layers" in message
    # Cut by parameters or layers it still runs, without FLOPs shares in its summary.
    assert counted_flops("odd", layers(), (4,), False, "parameters") is None
    assert flops_shares([0, 1, 2], None) is None
