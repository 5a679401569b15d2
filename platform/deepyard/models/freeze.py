"""Freeze, then unfreeze: a pretrained backbone under a new head.

For the first `freeze_steps` training forward passes the backbone runs without gradients:
only the new head learns, on the pretrained features. After that the whole model is
fine-tuned, the backbone at `backbone_lr_scale` x the head's learning rate. The backbone's
batch-norm layers stay in inference mode throughout (their pretrained statistics; their
scale and shift still learn), as Keras' transfer-learning guide advises: switching them to
batch statistics at the unfreeze shifts every feature the head was trained on.
The count is a buffer, so it is saved in checkpoints and a resumed run freezes exactly as
an uninterrupted one. With gradient accumulation it counts micro-batches.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


class FreezeThenTune(nn.Module):
    steps_seen: torch.Tensor  # training forwards so far (a buffer: checkpointed)

    def __init__(
        self,
        prepare: nn.Module,
        backbone: nn.Module,
        head: nn.Module,
        freeze_steps: int,
        backbone_lr_scale: float = 1.0,
    ) -> None:
        super().__init__()
        self.prepare, self.backbone, self.head = prepare, backbone, head
        self.freeze_steps, self.backbone_lr_scale = freeze_steps, backbone_lr_scale
        self.register_buffer("steps_seen", torch.zeros((), dtype=torch.int64))
        self.train()  # batch norm of the backbone in inference mode from the start

    def optimizer_groups(self) -> list[dict[str, Any]]:
        """Once unfrozen, the backbone learns at `backbone_lr_scale` x the head's LR, so
        large steps do not wash out the pretrained features (train.engine.param_groups)."""
        return [
            {"params": list(self.head.parameters()) + list(self.prepare.parameters())},
            {"params": list(self.backbone.parameters()), "lr_scale": self.backbone_lr_scale},
        ]

    @property
    def frozen(self) -> bool:
        return int(self.steps_seen) < self.freeze_steps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.prepare(x)
        if not self.training:
            return self.head(self.backbone(x))
        frozen = self.frozen
        self.steps_seen.add_(1)
        if not frozen:
            return self.head(self.backbone(x))
        with torch.no_grad():
            features = self.backbone(x)
        return self.head(features)

    def train(self, mode: bool = True) -> FreezeThenTune:
        super().train(mode)
        for module in self.backbone.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()  # pretrained statistics, always
        return self
