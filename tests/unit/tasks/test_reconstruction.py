"""Reconstruction MSE: per pixel over every eval row, the same on one process and on two
gloo ranks (summed errors over summed pixels, padding masked), and equal to a direct
computation; each evaluation's PNG shows originals above reconstructions (rank 0)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch
from PIL import Image

from deepyard.data import TensorData
from deepyard.models.autoencoder import build_conv_autoencoder
from deepyard.tasks import get
from deepyard.tasks.images import grid_size
from deepyard.tasks.reconstruction import SHOWN
from deepyard.testing.gloo import on_two_ranks

CPU = torch.device("cpu")
task = get("reconstruction")


def tiny_problem(rows: int = 23) -> tuple[torch.nn.Module, TensorData]:
    images = torch.rand(rows, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    model = build_conv_autoencoder((1, 8, 8), 10, width=4, latent=6)
    return model, TensorData(images, torch.zeros(rows, dtype=torch.long), (1, 8, 8), 10)


def direct_mse(model: torch.nn.Module, data: TensorData) -> float:
    with torch.no_grad():
        return float(((model(data.inputs) - data.inputs) ** 2).double().mean())


def test_mse_is_per_pixel_over_every_row() -> None:
    model, data = tiny_problem()
    result = task.evaluate(model, data, 0, 1, 5, CPU, torch.float32)
    assert result.metrics["num_samples"] == 23
    assert result.metrics["mse"] == pytest.approx(direct_mse(model, data), rel=1e-6)
    assert result.metrics["loss"] == result.metrics["mse"]
    assert model.training  # handed back in training mode


def test_training_loss_is_the_same_mse() -> None:
    model, data = tiny_problem()
    loss = task.loss(model(data.inputs), data.inputs, data.labels)
    assert float(loss.detach()) == pytest.approx(direct_mse(model, data), rel=1e-5)


def _two_rank_eval(rank: int, world_size: int) -> dict:
    model, data = tiny_problem()
    result = task.evaluate(model, data, rank, world_size, 5, CPU, torch.float32)
    return {"metrics": result.metrics, "images": sorted(result.images)}


def test_two_gloo_ranks_agree_with_a_direct_computation(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("GLOO_SOCKET_IFNAME", "lo")
    ranks = on_two_ranks(_two_rank_eval, tmp_path)
    model, data = tiny_problem()
    expected = direct_mse(model, data)
    for result in ranks:  # 12 + 11 rows, the padding row masked out
        assert result["metrics"]["num_samples"] == 23
        assert result["metrics"]["mse"] == pytest.approx(expected, rel=1e-6)
    # Each rank alone would see another error: the sums are reduced, not the means.
    halves = [
        direct_mse(model, TensorData(data.inputs[s], data.labels[s], (1, 8, 8), 10))
        for s in (slice(0, 12), slice(12, 23))
    ]
    assert all(abs(h - expected) > 1e-4 for h in halves)
    assert [r["images"] for r in ranks] == [["samples"], []]  # the PNG comes from rank 0


def test_png_shows_originals_above_reconstructions() -> None:
    model, data = tiny_problem()
    png = task.evaluate(model, data, 0, 1, 5, CPU, torch.float32).images["samples"]
    picture = Image.open(io.BytesIO(png))
    assert picture.format == "PNG" and picture.mode == "L"
    assert picture.size == grid_size(2, SHOWN, 8, 8)
    pixels = torch.tensor(list(picture.getdata()), dtype=torch.float32).view(
        picture.height, picture.width
    )
    # The top-left tile is the first eval image (scaled 2x, rounded to 8 bits).
    first = pixels[4:20:2, 4:20:2] / 255
    assert torch.allclose(first, data.inputs[0, 0], atol=1 / 255)
