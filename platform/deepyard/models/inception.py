"""An Inception-style CNN: blocks of parallel branches (1x1, 3x3, double 3x3, pool + 1x1)
whose outputs are concatenated; max pooling between stages halves the resolution."""

from __future__ import annotations

import torch
from torch import nn

from deepyard.models import checks
from deepyard.models.registry import register


def conv_bn(in_ch: int, out_ch: int, kernel: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, kernel, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(out_ch),
        nn.ReLU(inplace=True),
    )


class InceptionBlock(nn.Module):
    """Four branches of `branch` channels each over the same input; output 4 x branch."""

    def __init__(self, in_ch: int, branch: int) -> None:
        super().__init__()
        self.branches = nn.ModuleList(
            [
                conv_bn(in_ch, branch, 1),
                nn.Sequential(conv_bn(in_ch, branch, 1), conv_bn(branch, branch, 3)),
                # a 5x5 receptive field as two 3x3 convolutions (Inception v2/v3)
                nn.Sequential(
                    conv_bn(in_ch, branch, 1),
                    conv_bn(branch, branch, 3),
                    conv_bn(branch, branch, 3),
                ),
                nn.Sequential(nn.MaxPool2d(3, 1, 1), conv_bn(in_ch, branch, 1)),
            ]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([branch(x) for branch in self.branches], dim=1)


@register(
    "inception",
    family="cnn",
    summary="Inception-style CNN (parallel 1x1/3x3/5x5/pool branches, concatenated)",
    example_job="jobs/examples/fashion_mnist_inception.yaml",
)
def build_inception(
    input_shape: tuple[int, ...],
    num_classes: int,
    width: int = 8,
    stages: int = 2,
    blocks_per_stage: int = 1,
    dropout: float = 0.0,
) -> nn.Module:
    """`width` channels per branch in the first stage, doubling each stage."""
    channels, _, _ = checks.image_input("inception", input_shape)
    checks.positive("inception", width=width, stages=stages, blocks_per_stage=blocks_per_stage)
    checks.dropout("inception", dropout)
    layers: list[nn.Module] = [conv_bn(channels, 2 * width, 3)]
    ch = 2 * width
    for stage in range(stages):
        if stage > 0:
            layers.append(nn.MaxPool2d(2))
        branch = width * 2**stage
        for _ in range(blocks_per_stage):
            layers.append(InceptionBlock(ch, branch))
            ch = 4 * branch
    layers += [
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Dropout(dropout),
        nn.Linear(ch, num_classes),
    ]
    return nn.Sequential(*layers)
