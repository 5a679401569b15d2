"""The regression task's metrics: MSE and MAE equal scikit-learn's on the same
predictions in the series' units, in one process and summed over two gloo ranks; the
seasonal-naive baseline equals a direct computation on the raw series."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import mean_absolute_error, mean_squared_error
from torch import nn

from deepyard.data import TensorData
from deepyard.data.windows import make
from deepyard.spec.window import WindowSpec
from deepyard.tasks import get
from deepyard.testing.gloo import on_two_ranks

CPU = torch.device("cpu")
task = get("regression")


def series() -> np.ndarray:
    rng = np.random.default_rng(1)
    steps = np.arange(70)
    return 50 + 0.3 * steps + 8 * np.sin(2 * np.pi * steps / 12) + rng.normal(0, 1, 70)


def windowed_problem() -> tuple[nn.Module, TensorData, np.ndarray]:
    """A linear forecaster on 23 test windows (odd: two ranks need a padding row) of a
    seasonal series, with the raw test targets."""
    values = series()
    _, rows, info = make(values[:47], values[47:], WindowSpec(input_steps=13, season=12))
    inputs = torch.tensor(rows.inputs, dtype=torch.float32).unsqueeze(-1)
    labels = torch.tensor(rows.targets, dtype=torch.float32)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(13, 1))
    return model, TensorData(inputs, labels, (13, 1), 1, window=info), values


def expected(model: nn.Module, data: TensorData, values: np.ndarray) -> dict[str, float]:
    """scikit-learn's figures in the series' units, and the baseline computed directly."""
    assert data.window is not None
    with torch.no_grad():
        change = model(data.inputs).squeeze(1).double().numpy() * data.window.scale
    last = values[46:69]  # each test window's last input (center "last")
    forecast, truth = last + change, values[47:]
    naive = values[47 - 12 : 70 - 12]  # the same point one season earlier
    return {
        "mse": mean_squared_error(truth, forecast),
        "mae": mean_absolute_error(truth, forecast),
        "mse_seasonal_naive": float(np.mean((truth - naive) ** 2)),
        "mae_seasonal_naive": float(np.mean(np.abs(truth - naive))),
    }


def test_single_process_metrics_are_in_series_units() -> None:
    model, data, values = windowed_problem()
    metrics = task.evaluate(model, data, 0, 1, 5, CPU, torch.float32).metrics
    want = expected(model, data, values)
    for name, value in want.items():
        assert metrics[name] == pytest.approx(value, rel=1e-5), name
    assert metrics["mse_vs_seasonal_naive"] == pytest.approx(
        want["mse"] / want["mse_seasonal_naive"], rel=1e-5
    )
    assert data.window is not None  # loss: the training MSE, in model units
    assert metrics["loss"] == pytest.approx(want["mse"] / data.window.scale**2, rel=1e-5)
    assert metrics["num_samples"] == 23


def test_training_loss_is_the_mean_squared_error() -> None:
    outputs = torch.tensor([[1.0], [2.0], [4.0]])
    labels = torch.tensor([1.5, 2.0, 3.0])
    loss = task.loss(outputs, torch.zeros(3, 2), labels)
    assert float(loss) == pytest.approx(mean_squared_error(labels, outputs.squeeze(1)))
    with pytest.raises(ValueError, match="must output one value per row"):
        task.loss(torch.zeros(3, 2), torch.zeros(3, 2), labels)


def test_plain_regression_data_has_no_baseline() -> None:
    """Numeric labels without a window: errors in the labels' units, no baseline."""
    gen = torch.Generator().manual_seed(0)
    inputs, labels = torch.randn(9, 3, generator=gen), torch.randn(9, generator=gen)
    torch.manual_seed(0)
    model = nn.Linear(3, 1)
    metrics = task.evaluate(model, TensorData(inputs, labels, (3,), 1), 0, 1, 4, CPU, torch.float32)
    with torch.no_grad():
        predicted = model(inputs).squeeze(1)
    assert metrics.metrics["mse"] == pytest.approx(mean_squared_error(labels, predicted), rel=1e-5)
    assert metrics.metrics["mae"] == pytest.approx(mean_absolute_error(labels, predicted), rel=1e-5)
    assert "mse_seasonal_naive" not in metrics.metrics


def _eval_rank(rank: int, world_size: int) -> dict[str, float]:
    model, data, _ = windowed_problem()
    return task.evaluate(model, data, rank, world_size, 5, CPU, torch.float32).metrics


def test_two_gloo_ranks_sum_errors_over_every_row(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("GLOO_SOCKET_IFNAME", "lo")
    ranks = on_two_ranks(_eval_rank, tmp_path)
    model, data, values = windowed_problem()
    want = expected(model, data, values)
    for metrics in ranks:
        assert metrics["num_samples"] == 23  # 12 + 11 rows; the padding row is masked out
        for name, value in want.items():
            assert metrics[name] == pytest.approx(value, rel=1e-5), name
