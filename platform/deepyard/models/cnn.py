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


class StagedCNN(nn.Sequential):
    """The CNN as one sequence (its state_dict keys are a Sequential's), whose `layers()`
    group it for pipeline stages: the stem, each residual block, the pooled head."""

    def __init__(self, stem: list[nn.Module], blocks: list[nn.Module], head: list[nn.Module]):
        super().__init__(*stem, *blocks, *head)
        self.stem_size, self.head_size = len(stem), len(head)

    def layers(self) -> list[nn.Module]:
        items = list(self)
        stem, head = items[: self.stem_size], items[len(items) - self.head_size :]
        return [
            nn.Sequential(*stem),
            *items[self.stem_size : -self.head_size],
            nn.Sequential(*head),
        ]


@register(
    "cnn",
    family="cnn",
    summary="Small ResNet-style CNN (residual stages, global average pooling)",
    example_job="jobs/examples/fashion_mnist_cnn.yaml",
    pipeline=True,
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
    stem: list[nn.Module] = [
        nn.Conv2d(channels, width, 3, 1, 1, bias=False),
        nn.BatchNorm2d(width),
        nn.ReLU(inplace=True),
    ]
    blocks: list[nn.Module] = []
    ch = width
    for stage in range(stages):
        out = width * 2**stage
        blocks.append(ResidualBlock(ch, out, stride=1 if stage == 0 else 2))
        ch = out
    head = [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout), nn.Linear(ch, num_classes)]
    return StagedCNN(stem, blocks, head)
