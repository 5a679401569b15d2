"""The LSTM forecaster: a window of values in, one forecast per row out; bad arguments and
inputs that are not windows name the field and the fix."""

from __future__ import annotations

import pytest
import torch

from deepyard import models


def test_a_window_maps_to_one_value_per_row() -> None:
    entry = models.get("lstm-forecaster")
    assert (entry.family, entry.task) == ("timeseries", "regression")
    model = models.build("lstm-forecaster", {"hidden": 8, "layers": 2}, (12, 1), 1)
    windows = torch.randn(5, 12, 1)
    assert model(windows).shape == (5, 1)
    model.eval()  # a flat window of one channel is the same input
    assert torch.allclose(model(windows.squeeze(-1)), model(windows))


def test_flops_count_every_step_of_every_layer() -> None:
    one = models.build("lstm-forecaster", {"hidden": 8, "layers": 1}, (12, 1), 1)
    two = models.build("lstm-forecaster", {"hidden": 8, "layers": 2}, (12, 1), 1)
    first = 12 * 2 * 4 * 8 * (1 + 8)  # 4 gates, (input + hidden) x hidden, per step
    assert one.flops_per_sample((12, 1)) == first + 2 * 8
    assert two.flops_per_sample((12, 1)) == first + 12 * 2 * 4 * 8 * 16 + 2 * 8


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ({"hidden": 0}, r"model.args.hidden=0 for model lstm-forecaster must be positive"),
        ({"dropout": 1.0}, r"model.args.dropout=1.0 for model lstm-forecaster is a probability"),
    ],
)
def test_bad_arguments_name_the_field(args: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        models.build("lstm-forecaster", args, (12, 1), 1)


def test_image_input_is_refused_with_the_fix() -> None:
    with pytest.raises(ValueError, match=r"cut a series into windows with data\.window"):
        models.build("lstm-forecaster", {}, (1, 8, 8), 10)
