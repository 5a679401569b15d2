"""Every model that offers pipeline stages (`pipeline=True` in the registry): its
`layers()` applied in turn are its forward, and hold every one of its parameters, so
stages cut from them train the same network."""

from __future__ import annotations

import pytest
import torch

from deepyard import models
from deepyard.models import registry

STAGED = [name for name in registry.names() if registry.get(name).pipeline]


def test_the_model_families_with_layers_are_registered() -> None:
    assert {"gpt", "transformer", "cnn"} <= set(STAGED)


@pytest.mark.parametrize("name", STAGED)
def test_layers_compose_to_forward_and_hold_every_parameter(name: str) -> None:
    entry = registry.get(name)
    torch.manual_seed(0)
    tokens = entry.inputs == "tokens"
    vocab = registry.Vocab(size=500, pad_id=0) if tokens else None
    model = models.build(name, {}, entry.default_input_shape, 3, vocab).eval()
    if tokens:
        inputs = torch.randint(1, 500, (2, *entry.default_input_shape))
        inputs[0, -5:] = 0  # a padded row
    else:
        inputs = torch.randn(2, *entry.default_input_shape)
    layers = model.layers()
    x = inputs
    with torch.no_grad():
        for layer in layers:
            x = layer(x)
        torch.testing.assert_close(x, model(inputs))
    held = {id(p) for layer in layers for p in layer.parameters()}
    assert held == {id(p) for p in model.parameters()}
    assert registry.pipeline_layers(name, {}) == len(layers)


def test_models_without_layers_report_none() -> None:
    assert registry.pipeline_layers("mlp", {}) is None
