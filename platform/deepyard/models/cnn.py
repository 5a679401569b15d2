"""A small ResNet-style CNN: a stem, residual stages that halve resolution, a linear head."""

from __future__ import annotations

import torch
from torch import nn

from deepyard.models import checks
from deepyard.models.registry import register


class ResidualBlock(nn.Module):
    """Two 3x3 convolutions with batch norm and an identity (or 1x1) shortcut."""

    def __init__(self, in_ch: int, out_ch: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_ch, out_ch, 3, stride, 1, bias=False),
            nn.BatchNorm2d(out_ch),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_ch, out_ch, 3, 1, 1, bias=False),
            nn.BatchNorm2d(out_ch),
        )
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_ch != out_ch:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_ch, out_ch, 1, stride, bias=False), nn.BatchNorm2d(out_ch)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) + self.shortcut(x))


@register(
    "cnn",
    family="cnn",
    summary="Small ResNet-style CNN (residual stages, global average pooling)",
    example_job="jobs/examples/fashion_mnist_cnn.yaml",
)
def build_cnn(
    input_shape: tuple[int, ...],
    num_classes: int,
    width: int = 16,
    stages: int = 2,
    dropout: float = 0.0,
) -> nn.Module:
    channels, _, _ = checks.image_input("cnn", input_shape)
    checks.positive("cnn", width=width, stages=stages)
    checks.dropout("cnn", dropout)
    layers: list[nn.Module] = [
        nn.Conv2d(channels, width, 3, 1, 1, bias=False),
        nn.BatchNorm2d(width),
        nn.ReLU(inplace=True),
    ]
    ch = width
    for stage in range(stages):
        out = width * 2**stage
        layers.append(ResidualBlock(ch, out, stride=1 if stage == 0 else 2))
        ch = out
    layers += [
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Dropout(dropout),
        nn.Linear(ch, num_classes),
    ]
    return nn.Sequential(*layers)
