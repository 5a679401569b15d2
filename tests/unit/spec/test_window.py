"""`data.window` at the spec edge: a forecaster's spec loads; windows that cannot form the
seasonal-naive baseline, windows on data without a series, and a model whose task reads
other labels are each one SpecError naming the field and the fix."""

from __future__ import annotations

import pytest

from deepyard.errors import SpecError
from deepyard.spec import load_text

SPEC = """\
name: ts
model: {name: lstm-forecaster}
data:
  dataset: co2
  window: {input_steps: 52, horizon: 1, season: 52}
  batch_size: 8
training: {max_steps: 5}
"""


def spec_error(*overrides: str, text: str = SPEC) -> str:
    with pytest.raises(SpecError) as info:
        load_text(text, "job.yaml", list(overrides))
    return str(info.value)


def test_forecaster_spec_loads_with_window_defaults() -> None:
    spec = load_text(SPEC, "job.yaml", ["data.window={input_steps: 8}"])
    window = spec.data.window
    assert window is not None
    assert (window.horizon, window.season, window.column, window.center) == (
        1,
        None,  # the naive forecast: the last known value
        "value",
        "last",
    )
    assert spec.task_name == "regression"
    assert "mse_vs_seasonal_naive" in spec.task_metrics


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (
            ["data.window.horizon=53"],
            "data.window.horizon=53 is more than one season (data.window.season=52) ahead",
        ),
        (
            ["data.window.input_steps=40", "data.window.horizon=4"],
            "data.window.input_steps=40 does not reach back to one season "
            "(data.window.season=52) before the target, which the seasonal-naive baseline "
            "forecasts with; use input_steps >= 49",
        ),
        (["data.window.input_steps=0"], "data.window.input_steps"),
        (["data.window.center=median"], "data.window.center"),
        (["data.window=null"], "data.dataset='co2' is a time series; set data.window"),
        (
            ["data.dataset=digits"],
            "data.window cuts a time series into rows, and data.dataset='digits' holds no "
            "series; use a time series (airline, co2) or remove data.window",
        ),
        (
            ["data.label=y"],
            "data.label does not apply with data.window",
        ),
        (
            ["model.name=mlp"],
            "model.name='mlp' is a classification model, and data.window makes "
            "real-valued targets; use a model that predicts values: lstm-forecaster",
        ),
        (
            ["data.dataset=digits", "data.window=null"],
            "model.name='lstm-forecaster' predicts values, and data.dataset='digits' has "
            "class labels",
        ),
    ],
)
def test_bad_window_names_the_field_and_the_fix(overrides: list[str], expected: str) -> None:
    assert expected in spec_error(*overrides)


def test_own_series_files_are_checked_for_the_window_column(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "series.parquet"
    pq.write_table(pa.table({"time": [1, 2, 3], "co2": [1.0, 2.0, 3.0]}), path)
    text = SPEC.replace("dataset: co2", f"train: {path}")
    assert load_text(text, "job.yaml", ["data.window.column=co2"]).data.window is not None
    message = spec_error(text=text)  # the default column, `value`, is not there
    assert "column value not found" in message and "data.train" in message
