"""A multilayer perceptron over flattened inputs: the smallest useful baseline."""

from __future__ import annotations

import math

from torch import nn

from deepyard.models import checks
from deepyard.models.registry import register


@register(
    "mlp",
    family="mlp",
    summary="Multilayer perceptron on flattened inputs",
    example_job="jobs/examples/digits_mlp.yaml",
    default_input_shape=(1, 8, 8),
)
def build_mlp(
    input_shape: tuple[int, ...],
    num_classes: int,
    hidden: int = 256,
    depth: int = 2,
    dropout: float = 0.0,
) -> nn.Module:
    checks.positive("mlp", hidden=hidden, depth=depth)
    checks.dropout("mlp", dropout)
    layers: list[nn.Module] = [nn.Flatten()]
    width = math.prod(input_shape)
    for _ in range(depth):
        layers += [nn.Linear(width, hidden), nn.ReLU(), nn.Dropout(dropout)]
        width = hidden
    layers.append(nn.Linear(width, num_classes))
    return nn.Sequential(*layers)
