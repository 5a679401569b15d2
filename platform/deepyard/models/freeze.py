"""Freeze, then unfreeze: a pretrained backbone under a new head.

For the first `freeze_steps` training forward passes the backbone runs without gradients
and with its batch-norm statistics fixed (eval mode): only the new head learns, on the
pretrained features. After that the whole model is fine-tuned. The count is a buffer, so
it is saved in checkpoints and a resumed run freezes exactly as an uninterrupted one.
With gradient accumulation it counts micro-batches.
"""

from __future__ import annotations

import torch
from torch import nn


class FreezeThenTune(nn.Module):
    steps_seen: torch.Tensor  # training forwards so far (a buffer: checkpointed)

    def __init__(self, prepare: nn.Module, backbone: nn.Module, head: nn.Module, freeze_steps: int):
        super().__init__()
        self.prepare, self.backbone, self.head = prepare, backbone, head
        self.freeze_steps = freeze_steps
        self.register_buffer("steps_seen", torch.zeros((), dtype=torch.int64))

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
        self.backbone.eval()  # fixed batch-norm statistics while frozen
        try:
            with torch.no_grad():
                features = self.backbone(x)
        finally:
            self.backbone.train()
        return self.head(features)
