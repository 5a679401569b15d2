"""Layer-by-layer initialisation (deepyard.models.layer_init): a layer of every model that
pipeline stages cut gets the same weights whichever other layers a rank materialises,
the rest stay unallocated on the meta device, the job's seed changes them, the GPT keeps
GPT-2's scheme and its tie, and models that cannot be built this way are refused with
the fix."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from torch import nn

from deepyard.models import layer_init, registry

STAGED = [name for name in registry.names() if registry.get(name).pipeline]


def _meta(name: str) -> nn.Module:
    entry = registry.get(name)
    vocab = registry.Vocab(size=500, pad_id=0) if entry.inputs == "tokens" else None
    return layer_init.build_on_meta(name, {}, entry.default_input_shape, 3, vocab)


def _states(model: nn.Module, indices: list[int]) -> list[dict[str, torch.Tensor]]:
    layers = model.layers()  # type: ignore[operator]
    return [layers[i].state_dict() for i in indices]


@pytest.mark.parametrize("name", STAGED)
def test_a_layer_has_the_same_weights_whichever_layers_are_built(name: str) -> None:
    whole = layer_init.materialise_all(_meta(name), seed=3)
    count = len(whole.layers())  # type: ignore[operator]
    for index in (1, count - 2):  # one layer alone, as a middle stage would build it
        alone = _meta(name)
        layer_init.materialise(alone, [index], seed=3)
        layers = alone.layers()  # type: ignore[operator]
        built = [i for i, layer in enumerate(layers) if not _is_meta(layer)]
        assert built == [index]  # nothing else allocated
        (got,), (want,) = _states(alone, [index]), _states(whole, [index])
        assert got.keys() == want.keys()
        for key in want:
            assert torch.equal(got[key], want[key]), (name, index, key)
    other = layer_init.materialise_all(_meta(name), seed=4)
    assert any(
        not torch.equal(a, b)
        for a, b in zip(whole.state_dict().values(), other.state_dict().values(), strict=True)
    )


def _is_meta(layer: nn.Module) -> bool:
    return any(t.is_meta for t in [*layer.parameters(), *layer.buffers()])


def test_the_gpt_keeps_gpt2_initialisation_and_its_tie() -> None:
    model: Any = layer_init.materialise_all(_meta("gpt"), seed=0)
    assert model.head.proj.weight is model.embed.weight
    n_layer = model.shape.n_layer
    block = model.blocks[0]
    assert block.attn.qkv.weight.std().item() == pytest.approx(0.02, rel=0.05)
    residual = block.mlp[2].weight.std().item()
    assert residual == pytest.approx(0.02 / math.sqrt(2 * n_layer), rel=0.05)
    assert torch.all(block.attn.qkv.bias == 0) and torch.all(block.ln_attn.weight == 1)
    # The constructor (models.build) initialises with the same scheme.
    built: Any = registry.build("gpt", {}, (64,), 3, registry.Vocab(500, 0))
    assert built.blocks[0].mlp[2].weight.std().item() == pytest.approx(residual, rel=0.05)


class _Layers(nn.Module):
    """A toy model offering layers()."""

    def __init__(self, *layers: nn.Module) -> None:
        super().__init__()
        self.items = nn.ModuleList(layers)

    def layers(self) -> list[nn.Module]:
        return list(self.items)


class _Raw(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.empty(4))  # no reset_parameters() writes it


def test_a_tensor_no_initialisation_writes_is_refused() -> None:
    with torch.device("meta"):
        model = _Layers(nn.Linear(4, 4), _Raw())
    with pytest.raises(
        ValueError, match=r"layer 1 \(_Raw\) leaves 'scale' uninit.*init_layer initialise it"
    ):
        layer_init.materialise_all(model, seed=0)


def test_a_layer_sharing_some_of_its_weights_is_refused() -> None:
    with torch.device("meta"):
        first, second = nn.Linear(4, 4), nn.Linear(4, 4)
    second.weight = first.weight  # shares the weight, keeps its own bias
    with pytest.raises(ValueError, match=r"layer 1 .* shares weights with layer 0"):
        layer_init.ties([first, second])


def test_a_model_built_on_a_real_device_is_refused() -> None:
    model = _Layers(nn.Linear(4, 4))
    with pytest.raises(ValueError, match="meta device"):
        layer_init.materialise(model, [0], seed=0)
