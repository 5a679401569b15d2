"""`data.window`: how a forecaster's rows are cut from a time series, and the checks that
tie it to the data and the model (deepyard.data.windows does the cutting)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import Field, PositiveInt, model_validator

from deepyard.spec.base import SpecModel

if TYPE_CHECKING:
    from deepyard.spec.data import DataSpec
    from deepyard.spec.job import JobSpec

EXAMPLE = "`window: {input_steps: 52, horizon: 1, season: 52}`"


class WindowSpec(SpecModel):
    """Windows of a series: the past `input_steps` values → the value `horizon` steps on."""

    input_steps: PositiveInt = Field(description="Past values the model reads per forecast.")
    horizon: PositiveInt = Field(
        default=1, description="Steps ahead of the last input that the model forecasts."
    )
    column: str = Field(default="value", description="The series' column of numbers.")
    season: PositiveInt | None = Field(
        default=None,
        description="Steps per season (52 for weekly data with a yearly cycle, 12 for "
        "monthly): the seasonal-naive baseline forecasts the value one season before the "
        "target. Default: the horizon (the naive forecast, the last known value).",
    )
    center: Literal["last", "mean"] = Field(
        default="last",
        description="last: inputs and target minus the window's last input (the model "
        "predicts the change), over the training split's std of horizon-step changes; "
        "mean: minus the training split's mean, over its std. Training statistics only.",
    )

    @model_validator(mode="after")
    def _baseline_in_reach(self) -> WindowSpec:
        season = self.season or self.horizon
        if self.horizon > season:
            raise ValueError(
                f"data.window.horizon={self.horizon} is more than one season "
                f"(data.window.season={season}) ahead, so the value one season before the "
                f"target is not known at forecast time; use horizon <= {season} or a "
                "longer season"
            )
        reach = season - self.horizon + 1
        if self.input_steps < reach:
            raise ValueError(
                f"data.window.input_steps={self.input_steps} does not reach back to one "
                f"season (data.window.season={season}) before the target, which the "
                f"seasonal-naive baseline forecasts with; use input_steps >= {reach}"
            )
        return self


def check_data(data: DataSpec, kind: str | None) -> None:
    """data.window fits the data: `kind` is the packaged dataset's kind (None: own files)."""
    window = data.window
    if kind == "timeseries" and window is None:
        raise ValueError(
            f"data.dataset={data.dataset!r} is a time series; set data.window to cut it "
            f"into forecasting rows, e.g. {EXAMPLE}"
        )
    if window is None:
        return
    if kind is not None and kind != "timeseries":
        raise ValueError(
            f"data.window cuts a time series into rows, and data.dataset={data.dataset!r} "
            "holds no series; use a time series (airline, co2) or remove data.window"
        )
    if data.text is not None:
        raise ValueError("data.window and data.text are alternatives; keep one of them")
    given = sorted({"features", "label"} & data.model_fields_set)
    if given:
        raise ValueError(
            f"data.{given[0]} does not apply with data.window (windowing makes the features "
            "and the label from the series); remove it, and name the series column in "
            "data.window.column"
        )


def check_task(spec: JobSpec) -> None:
    """The model's task reads the labels this data has (class ids or values)."""
    from deepyard.models import registry
    from deepyard.tasks.catalog import info

    wants = info(spec.task_name).labels
    windowed = spec.data.window is not None
    if wants == "classes" and windowed:
        forecasters = [n for n in registry.names() if info(registry.get(n).task).labels == "values"]
        raise ValueError(
            f"model.name={spec.model.name!r} is a classification model, and data.window "
            "makes real-valued targets; use a model that predicts values: "
            f"{', '.join(forecasters)}"
        )
    if wants == "values" and spec.data.dataset is not None and not windowed:
        raise ValueError(
            f"model.name={spec.model.name!r} predicts values, and data.dataset="
            f"{spec.data.dataset!r} has class labels; use a time series with data.window "
            f"(e.g. dataset: co2 and {EXAMPLE}), or data.train with a numeric label column"
        )
