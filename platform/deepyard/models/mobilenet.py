"""A MobileNetV2-style CNN: inverted residual blocks (1x1 expand, 3x3 depthwise, linear
1x1 projection, a shortcut where shapes allow), ReLU6, global average pooling."""

from __future__ import annotations

import torch
from torch import nn

from deepyard.models import checks
from deepyard.models.registry import register


class InvertedResidual(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, stride: int, expansion: int) -> None:
        super().__init__()
        hidden = in_ch * expansion
        layers: list[nn.Module] = []
        if expansion != 1:
            layers += [nn.Conv2d(in_ch, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6()]
        layers += [
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),  # depthwise
            nn.BatchNorm2d(hidden),
            nn.ReLU6(),
            nn.Conv2d(hidden, out_ch, 1, bias=False),  # linear bottleneck: no activation
            nn.BatchNorm2d(out_ch),
        ]
        self.body = nn.Sequential(*layers)
        self.residual = stride == 1 and in_ch == out_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.body(x)
        return x + out if self.residual else out


@register(
    "mobilenet",
    family="cnn",
    summary="MobileNetV2-style CNN (inverted residuals, depthwise convolutions)",
    example_job="jobs/examples/fashion_mnist_mobilenet.yaml",
)
def build_mobilenet(
    input_shape: tuple[int, ...],
    num_classes: int,
    width: int = 16,
    stages: int = 3,
    blocks_per_stage: int = 2,
    expansion: int = 4,
    head_width: int = 256,
    dropout: float = 0.0,
) -> nn.Module:
    """`width` channels in the first stage, doubling each stage (each later stage starts
    with a stride-2 block and expands by `expansion`); a 1x1 convolution to `head_width`
    before pooling."""
    channels, _, _ = checks.image_input("mobilenet", input_shape)
    checks.positive(
        "mobilenet",
        width=width,
        stages=stages,
        blocks_per_stage=blocks_per_stage,
        expansion=expansion,
        head_width=head_width,
    )
    checks.dropout("mobilenet", dropout)
    layers: list[nn.Module] = [
        nn.Conv2d(channels, width, 3, 1, 1, bias=False),
        nn.BatchNorm2d(width),
        nn.ReLU6(),
    ]
    ch = width
    for stage in range(stages):
        out = width * 2**stage
        for block in range(blocks_per_stage):
            stride = 2 if stage > 0 and block == 0 else 1
            # As in MobileNetV2, the first stage does not expand (t=1): it runs at full size.
            layers.append(InvertedResidual(ch, out, stride, 1 if stage == 0 else expansion))
            ch = out
    layers += [
        nn.Conv2d(ch, head_width, 1, bias=False),
        nn.BatchNorm2d(head_width),
        nn.ReLU6(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Dropout(dropout),
        nn.Linear(head_width, num_classes),
    ]
    return nn.Sequential(*layers)
