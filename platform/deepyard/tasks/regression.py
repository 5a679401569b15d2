"""Regression: one real value per row, trained with mean squared error.

Metrics, exact across ranks (squared and absolute errors are summed over every row of
every rank, then divided once): `mse` and `mae` in the data's own units, and `loss` (the
MSE the model trains on, in its normalised units). On a windowed series
(deepyard.data.windows) model units are series units over `WindowInfo.scale`, so the
errors are scaled back; and the same windows are scored with the seasonal-naive
forecast (the target's value one season earlier, one of the row's inputs):
`mse_seasonal_naive`, `mae_seasonal_naive` and `mse_vs_seasonal_naive` (the model's MSE
over the baseline's: below 1 beats it).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from deepyard.data import TensorData
from deepyard.data.windows import WindowInfo
from deepyard.tasks.base import EvalBatch, Scoring, Task
from deepyard.tasks.catalog import TaskInfo
from deepyard.train.evaluate import Evaluation


class Regression(Task):
    """`window`: the eval split's windowing (set per evaluation), for the baseline."""

    def __init__(self, info: TaskInfo, window: WindowInfo | None = None) -> None:
        super().__init__(info)
        self.window = window

    def loss(
        self,
        outputs: torch.Tensor,
        inputs: torch.Tensor,
        labels: torch.Tensor,
        pad_id: int | None = None,  # token tasks only
    ) -> Any:
        return F.mse_loss(predictions(outputs, labels), labels.float())

    def eval_batch(
        self,
        outputs: torch.Tensor,
        inputs: torch.Tensor,
        labels: torch.Tensor,
        mask: Any,
        pad_id: int | None = None,
    ) -> EvalBatch:
        target, keep = labels.double(), mask.double()
        sums = error_sums(predictions(outputs, labels).double() - target, keep, "")
        if self.window is not None:
            naive = inputs.reshape(len(labels), -1)[:, self.window.naive_index].double()
            sums |= error_sums(naive - target, keep, "_seasonal_naive")
        return EvalBatch({**sums, "rows": keep.sum()})

    def finish(
        self, sums: dict[str, torch.Tensor], rows: dict[str, torch.Tensor], data: TensorData
    ) -> Evaluation:
        count = max(float(sums.get("rows", torch.tensor(0.0))), 1.0)
        scale = data.window.scale if data.window is not None else 1.0
        mean = {name: float(total) / count for name, total in sums.items() if name != "rows"}
        metrics = {"mse": mean["squared"] * scale**2, "mae": mean["absolute"] * scale}
        if "squared_seasonal_naive" in mean:
            naive = mean["squared_seasonal_naive"] * scale**2
            metrics["mse_seasonal_naive"] = naive
            metrics["mae_seasonal_naive"] = mean["absolute_seasonal_naive"] * scale
            if naive > 0:
                metrics["mse_vs_seasonal_naive"] = metrics["mse"] / naive
        metrics["loss"] = mean["squared"]
        metrics["num_samples"] = float(sums.get("rows", torch.tensor(0.0)))
        return Evaluation(metrics)

    def scoring(
        self, engine: Any, data: TensorData, device: torch.device, dtype: torch.dtype
    ) -> Scoring:
        """Scored against the baseline of the split's own windowing, where it has one."""
        return Scoring(Regression(self.info, data.window), data)


def predictions(outputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The model's one value per row, shaped like the labels."""
    if outputs.numel() != labels.numel():
        raise ValueError(
            f"a regression model must output one value per row, got outputs of shape "
            f"{tuple(outputs.shape)} for {labels.numel()} rows; give it a single output"
        )
    return outputs.float().reshape(labels.shape)


def error_sums(errors: torch.Tensor, keep: torch.Tensor, suffix: str) -> dict[str, torch.Tensor]:
    """Sums of squared and absolute errors over the kept (unmasked) rows."""
    return {
        f"squared{suffix}": (errors.square() * keep).sum(),
        f"absolute{suffix}": (errors.abs() * keep).sum(),
    }
