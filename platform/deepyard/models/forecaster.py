"""An LSTM forecaster: a stacked LSTM reads a window of past values (oldest first) and a
linear head maps its last hidden state to the forecast (task `regression`)."""

from __future__ import annotations

import torch
from torch import nn

from deepyard.models import checks
from deepyard.models.registry import register


class LSTMForecaster(nn.Module):
    def __init__(
        self, channels: int, outputs: int, hidden: int, layers: int, dropout: float
    ) -> None:
        super().__init__()
        self.lstm = nn.LSTM(
            channels,
            hidden,
            num_layers=layers,
            batch_first=True,
            dropout=dropout if layers > 1 else 0.0,
        )
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(hidden, outputs)

    def flops_per_sample(self, input_shape: tuple[int, ...]) -> float:
        """Forward FLOPs of one window of input_shape[0] steps (the flop counter skips
        LSTMs)."""
        lstm, per_step = self.lstm, 0.0
        for layer in range(lstm.num_layers):
            width = lstm.input_size if layer == 0 else lstm.hidden_size
            per_step += 2 * 4 * lstm.hidden_size * (width + lstm.hidden_size)
        return input_shape[0] * per_step + 2 * self.head.in_features * self.head.out_features

    def forward(self, window: torch.Tensor) -> torch.Tensor:
        if window.dim() == 2:  # (batch, steps): one value per step
            window = window.unsqueeze(-1)
        hidden = self.lstm(window)[0][:, -1]
        return self.head(self.dropout(hidden))


@register(
    "lstm-forecaster",
    family="timeseries",
    summary="LSTM forecaster: a window of past values -> the value `horizon` steps on",
    example_job="jobs/examples/co2_lstm.yaml",
    task="regression",
    default_input_shape=(52, 1),
    default_num_classes=1,
)
def build_lstm_forecaster(
    input_shape: tuple[int, ...],
    num_classes: int,
    hidden: int = 32,
    layers: int = 2,
    dropout: float = 0.0,
) -> nn.Module:
    """`num_classes` is the number of values forecast per row (1 for `data.window`)."""
    if len(input_shape) not in (1, 2):
        raise ValueError(
            f"model lstm-forecaster reads a window of values (steps, channels), got inputs "
            f"of shape {input_shape}; cut a series into windows with data.window"
        )
    checks.positive("lstm-forecaster", hidden=hidden, layers=layers)
    checks.dropout("lstm-forecaster", dropout)
    channels = input_shape[1] if len(input_shape) == 2 else 1
    return LSTMForecaster(channels, num_classes, hidden, layers, dropout)
