"""Reconstruction (autoencoders): the output reproduces the input. Loss and metric are
the mean squared error per pixel, exact across ranks (summed errors over summed pixels);
each evaluation also shows the first eval images above their reconstructions (a PNG)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from deepyard.data import TensorData
from deepyard.tasks.base import EvalBatch, Task
from deepyard.tasks.images import grid_png
from deepyard.train.evaluate import Evaluation

SHOWN = 8  # eval images in the PNG grid: originals above, reconstructions below


class Reconstruction(Task):
    def loss(
        self,
        outputs: torch.Tensor,
        inputs: torch.Tensor,
        labels: torch.Tensor,
        pad_id: int | None = None,  # token tasks only
    ) -> Any:
        return F.mse_loss(outputs.float(), inputs.float())

    def eval_batch(
        self,
        outputs: torch.Tensor,
        inputs: torch.Tensor,
        labels: torch.Tensor,
        mask: Any,
        pad_id: int | None = None,
    ) -> EvalBatch:
        errors = (outputs.float() - inputs.float()).pow(2).flatten(1).sum(1)
        pixels = inputs[0].numel()
        rows = mask.sum()
        return EvalBatch({"squared_error": (errors * mask).sum(), "pixels": rows * pixels})

    def finish(
        self, sums: dict[str, torch.Tensor], rows: dict[str, torch.Tensor], data: TensorData
    ) -> Evaluation:
        pixels = float(sums.get("pixels", torch.tensor(0.0)))
        mse = float(sums.get("squared_error", torch.tensor(0.0))) / max(pixels, 1.0)
        count = pixels / max(1, data.inputs[0].numel())
        return Evaluation({"mse": mse, "loss": mse, "num_samples": count})

    def images(
        self, engine: Any, data: TensorData, rank: int, device: torch.device, dtype: torch.dtype
    ) -> dict[str, bytes]:
        """The first eval images above their reconstructions (image data only)."""
        if data.inputs.dim() != 4:  # not images: nothing to show
            return {}
        originals = data.inputs[:SHOWN]
        engine.eval()  # every rank: a ZeRO-3 forward gathers parameters from all of them
        with torch.no_grad():
            rebuilt = engine(originals.to(device, dtype)).float().cpu()
        engine.train()
        return {"samples": grid_png([originals, rebuilt])} if rank == 0 else {}
