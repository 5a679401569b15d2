"""The model registry: names map to builders; mistakes name the valid choices."""

from __future__ import annotations

import importlib.util

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
    with pytest.raises(ValueError, match=r"model.name='resnet'.*use one of: .*cnn, .*mlp"):
        models.get("resnet")


def test_unknown_argument_lists_the_valid_ones() -> None:
    with pytest.raises(ValueError) as info:
        models.check("cnn", {"width": 8, "depth": 3})
    message = str(info.value)
    assert "model.args has depth" in message
    assert "valid arguments: width, stages, dropout" in message
    models.check("cnn", {"width": 8, "stages": 1})  # valid arguments pass


IMAGE_MODELS = ["cnn", "inception", "mobilenet"]


@pytest.mark.parametrize("name", [*IMAGE_MODELS, "mlp"])
@pytest.mark.parametrize(
    "input_shape", [(1, 28, 28), (1, 8, 8), (3, 32, 32)], ids=["28x28", "8x8", "rgb32"]
)
def test_builders_map_a_batch_to_class_logits(name: str, input_shape: tuple[int, ...]) -> None:
    model = models.build(name, {}, input_shape, 10)
    logits = model(torch.randn(4, *input_shape))
    assert logits.shape == (4, 10)
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize(
    ("name", "args"),
    [
        ("cnn", {"width": 8, "stages": 3, "dropout": 0.1}),
        ("mlp", {"hidden": 32, "depth": 1}),
        ("inception", {"width": 4, "stages": 3, "blocks_per_stage": 2}),
        ("mobilenet", {"width": 8, "expansion": 6, "head_width": 64}),
    ],
)
def test_builder_arguments_change_the_model(name: str, args: dict) -> None:
    default = models.build(name, {}, (1, 8, 8), 10)
    custom = models.build(name, args, (1, 8, 8), 10)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(custom) != count(default)
    assert custom(torch.randn(3, 1, 8, 8)).shape == (3, 10)


@pytest.mark.parametrize("name", IMAGE_MODELS)
def test_image_models_refuse_flat_input_with_a_clear_message(name: str) -> None:
    with pytest.raises(ValueError, match=r"needs image input \(channels, height, width\)"):
        models.build(name, {}, (64,), 10)


@pytest.mark.parametrize("name", [*IMAGE_MODELS, "mlp"])
def test_a_bad_dropout_names_the_field_and_the_fix(name: str) -> None:
    message = rf"model.args.dropout=1.5 for model {name} is a probability.*\[0, 1\)"
    with pytest.raises(ValueError, match=message):
        models.build(name, {"dropout": 1.5}, (1, 8, 8), 10)


@pytest.mark.parametrize(
    ("name", "field"),
    [
        ("cnn", "width"),
        ("inception", "blocks_per_stage"),
        ("mobilenet", "expansion"),
        ("mlp", "hidden"),
    ],
)
def test_a_size_of_zero_names_the_field_and_the_fix(name: str, field: str) -> None:
    message = rf"model.args.{field}=0 for model {name} must be positive; use e.g. {field}: 1"
    with pytest.raises(ValueError, match=message):
        models.build(name, {field: 0}, (1, 8, 8), 10)


def test_inception_concatenates_four_branches() -> None:
    from deepyard.models.inception import InceptionBlock

    block = InceptionBlock(6, 5)
    assert len(block.branches) == 4
    assert block(torch.randn(2, 6, 9, 9)).shape == (2, 20, 9, 9)  # 4 x 5 channels, same size


def test_mobilenet_blocks_are_inverted_residuals_with_depthwise_convolutions() -> None:
    from deepyard.models.mobilenet import InvertedResidual

    block = InvertedResidual(8, 8, stride=1, expansion=4)
    depthwise = [m for m in block.modules() if isinstance(m, nn.Conv2d) and m.groups > 1]
    assert [(m.in_channels, m.groups) for m in depthwise] == [(32, 32)]  # expanded 4x
    assert block.residual
    assert not InvertedResidual(8, 16, stride=2, expansion=4).residual
    x = torch.randn(2, 8, 6, 6)
    assert InvertedResidual(8, 16, stride=2, expansion=4)(x).shape == (2, 16, 3, 3)


def test_parameter_counts_are_for_the_default_arguments() -> None:
    for name in models.names():
        entry = models.get(name)
        if (
            name == "efficientnet-lite0"
            and importlib.util.find_spec("efficientnet_lite_pytorch") is None
        ):
            continue  # the vision extra is not installed (test_efficientnet.py says so)
        vocab = registry.MINILM_VOCAB if entry.inputs == "tokens" else None
        shape, classes = entry.default_input_shape, entry.default_num_classes
        model = models.build(name, {}, shape, classes, vocab)
        assert models.num_parameters(name) == sum(p.numel() for p in model.parameters())
    assert models.num_parameters("cnn", {"width": 8}) < models.num_parameters("cnn")


def test_mlp_takes_flat_input() -> None:
    model = models.build("mlp", {"hidden": 8}, (64,), 3)
    assert model(torch.randn(5, 64)).shape == (5, 3)


@pytest.mark.parametrize("name", models.names())
def test_each_models_example_job_trains_that_model(name: str) -> None:
    from pathlib import Path

    from deepyard.spec import load

    job = models.get(name).example_job
    assert job is not None, f"model {name} has no example job"
    spec = load(Path(__file__).resolve().parents[3] / job, check_paths=False)
    assert spec.model.name == name
    models.check(name, spec.model.args)
