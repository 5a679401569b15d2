"""The model registry: names map to builders; mistakes name the valid choices."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from deepyard import models
from deepyard.models import registry


@pytest.fixture
def scratch_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """Register into a copy, so a test's models never leak into other tests."""
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))


def test_built_in_models_are_listed() -> None:
    assert {"cnn", "mlp"} <= set(models.names())
    assert models.names() == sorted(models.names())
    assert models.get("cnn").family == "cnn"
    assert models.get("cnn").example_job == "jobs/examples/fashion_mnist_cnn.yaml"


def test_second_registration_of_a_name_is_rejected(scratch_registry: None) -> None:
    with pytest.raises(ValueError, match="'mlp' is registered twice"):
        models.register("mlp", family="mlp", summary="again")(lambda **kw: nn.Identity())
    assert models.get("mlp").builder is not None
    assert models.get("mlp").summary != "again"


def test_registered_model_is_listed_and_built(scratch_registry: None) -> None:
    @models.register("linear", family="linear", summary="one layer")
    def build_linear(input_shape: tuple[int, ...], num_classes: int, bias: bool = True):
        return nn.Sequential(nn.Flatten(), nn.Linear(input_shape[0], num_classes, bias=bias))

    assert "linear" in models.names()
    assert models.get("linear").arg_names() == ["bias"]
    model = models.build("linear", {"bias": False}, (5,), 3)
    assert model(torch.zeros(2, 5)).shape == (2, 3)


def test_unknown_name_lists_the_registered_ones() -> None:
    with pytest.raises(ValueError, match=r"model.name='resnet'.*use one of: cnn, mlp"):
        models.get("resnet")


def test_unknown_argument_lists_the_valid_ones() -> None:
    with pytest.raises(ValueError) as info:
        models.check("cnn", {"width": 8, "depth": 3})
    message = str(info.value)
    assert "model.args has depth" in message
    assert "valid arguments: width, stages, dropout" in message
    models.check("cnn", {"width": 8, "stages": 1})  # valid arguments pass


@pytest.mark.parametrize("name", ["cnn", "mlp"])
@pytest.mark.parametrize("input_shape", [(1, 28, 28), (1, 8, 8)], ids=["28x28", "8x8"])
def test_builders_map_a_batch_to_class_logits(name: str, input_shape: tuple[int, ...]) -> None:
    model = models.build(name, {}, input_shape, 10)
    logits = model(torch.randn(4, *input_shape))
    assert logits.shape == (4, 10)
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize(
    ("name", "args"),
    [("cnn", {"width": 8, "stages": 3, "dropout": 0.1}), ("mlp", {"hidden": 32, "depth": 1})],
)
def test_builder_arguments_change_the_model(name: str, args: dict) -> None:
    default = models.build(name, {}, (1, 8, 8), 10)
    custom = models.build(name, args, (1, 8, 8), 10)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(custom) != count(default)
    assert custom(torch.randn(3, 1, 8, 8)).shape == (3, 10)


def test_cnn_refuses_flat_input_with_a_clear_message() -> None:
    with pytest.raises(ValueError, match=r"needs image input \(channels, height, width\)"):
        models.build("cnn", {}, (64,), 10)


def test_mlp_takes_flat_input() -> None:
    model = models.build("mlp", {"hidden": 8}, (64,), 3)
    assert model(torch.randn(5, 64)).shape == (5, 3)
