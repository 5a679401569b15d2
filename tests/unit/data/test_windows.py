"""Windowing a series for a forecaster: no test value reaches a training row, the first
test window's inputs end at the last training point, the normalisation statistics come
from the training split alone, and bad series get errors that name the field."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from deepyard.data import read_split, resolve_sources
from deepyard.data.windows import WindowInfo, Windows, make
from deepyard.errors import DataError, SpecError
from deepyard.spec import load_text
from deepyard.spec.window import WindowSpec


def series(points: int = 60, seed: int = 0) -> np.ndarray:
    """Distinct values with a trend, a 12-step season and noise."""
    rng = np.random.default_rng(seed)
    steps = np.arange(points)
    return 100 + 0.5 * steps + 10 * np.sin(2 * np.pi * steps / 12) + rng.normal(0, 1, points)


def raw(rows: Windows, info: WindowInfo) -> tuple[np.ndarray, np.ndarray]:
    """Undo center "mean": the series' own values."""
    return rows.inputs * info.scale + info.offset, rows.targets * info.scale + info.offset


def test_training_windows_hold_training_points_only() -> None:
    values = series()
    train, test = values[:48], values[48:]
    spec = WindowSpec(input_steps=12, horizon=2, season=12, center="mean")
    train_rows, _, info = make(train, test, spec)

    inputs, targets = raw(train_rows, info)
    assert len(targets) == 48 - 12 - 2 + 1  # every training point with a full window
    np.testing.assert_allclose(targets, train[13:])
    assert set(np.round(inputs.ravel(), 6)) <= set(np.round(train, 6))
    assert not set(np.round(inputs.ravel(), 6)) & set(np.round(test, 6))
    # Any test values: the training rows and the statistics stay the same.
    changed = make(train, test * 3 + 7, spec)
    np.testing.assert_array_equal(changed[0].inputs, train_rows.inputs)
    np.testing.assert_array_equal(changed[0].targets, train_rows.targets)
    assert changed[2] == info


def test_every_test_point_is_forecast_from_the_values_before_it() -> None:
    values = series()
    train, test = values[:48], values[48:]
    spec = WindowSpec(input_steps=12, horizon=1, season=12, center="mean")
    _, test_rows, info = make(train, test, spec)

    inputs, targets = raw(test_rows, info)
    np.testing.assert_allclose(targets, test)  # the first test point included
    np.testing.assert_allclose(inputs[0], train[-12:])  # ends at the last training point
    for row, end in enumerate(range(48, 60)):
        np.testing.assert_allclose(inputs[row], values[end - 12 : end])


def test_statistics_come_from_the_training_split() -> None:
    values = series()
    train, test = values[:48], values[48:]
    _, _, mean = make(train, test, WindowSpec(input_steps=12, season=12, center="mean"))
    assert mean.offset == pytest.approx(train.mean())
    assert mean.scale == pytest.approx(train.std())
    assert mean.train_points == 48

    rows, _, last = make(train, test, WindowSpec(input_steps=12, horizon=3, season=12))
    assert last.offset == 0.0
    assert last.scale == pytest.approx((train[3:] - train[:-3]).std())
    # center "last": the change from the window's last input, in units of that spread.
    np.testing.assert_allclose(rows.inputs[:, -1], 0.0)
    np.testing.assert_allclose(rows.targets * last.scale, train[14:] - train[11:-3])


@pytest.mark.parametrize("center", ["last", "mean"])
def test_seasonal_naive_forecast_is_the_input_one_season_back(center: str) -> None:
    values = series()
    train, test = values[:48], values[48:]
    spec = WindowSpec(input_steps=14, horizon=2, season=12, center=center)  # type: ignore[arg-type]
    _, rows, info = make(train, test, spec)

    naive = rows.inputs[:, info.naive_index] - rows.targets  # model units
    direct = values[48 - 12 : 60 - 12] - test  # the target's value a season earlier
    np.testing.assert_allclose(naive * info.scale, direct)


def test_window_longer_than_the_training_split_names_the_field() -> None:
    values = series(30)
    with pytest.raises(SpecError, match=r"data.window.input_steps=28 \+ horizon=3 needs at least"):
        make(values[:24], values[24:], WindowSpec(input_steps=28, horizon=3, season=12))
    with pytest.raises(SpecError, match="use input_steps <= 21"):
        make(values[:24], values[24:], WindowSpec(input_steps=28, horizon=3, season=12))


def test_constant_series_is_a_data_error() -> None:
    with pytest.raises(DataError, match="does not vary over the training split"):
        make(np.ones(30), np.ones(5), WindowSpec(input_steps=4))


SPEC = """
name: t
model: {name: lstm-forecaster}
data:
  train: TRAIN
  eval: EVAL
  window: {input_steps: 6, season: 4}
  batch_size: 4
training: {max_steps: 1}
"""


def write_series(path: Path, values: np.ndarray, start: int = 0, **extra: pa.Array) -> str:
    times = np.datetime64("2000-01-01") + np.arange(start, start + len(values))
    table = pa.table({"time": pa.array(times), "value": values, **extra})
    pq.write_table(table, path)
    return str(path)


def windowed_spec(train: str, test: str, *overrides: str):  # type: ignore[no-untyped-def]
    text = SPEC.replace("TRAIN", train).replace("EVAL", test)
    return load_text(text, "j.yaml", list(overrides), check_paths=False)


def test_own_series_files_become_windowed_parquet(tmp_path: Path, deepyard_cache: Path) -> None:
    values = series(40)
    train = write_series(tmp_path / "train.parquet", values[:32])
    test = write_series(tmp_path / "test.parquet", values[32:], start=32)
    train_uri, test_uri = resolve_sources(windowed_spec(train, test).data)
    assert test_uri is not None and str(deepyard_cache) in train_uri

    train_data = read_split(train_uri, "features", "label", "values")
    test_data = read_split(test_uri, "features", "label", "values")
    assert train_data.input_shape == (6, 1) and len(train_data) == 32 - 6
    assert test_data.labels.dtype == torch.float32 and len(test_data) == 8
    assert test_data.window == train_data.window
    assert test_data.window is not None and test_data.window.season == 4
    times = pq.read_table(test_uri, columns=["time"]).column(0).to_numpy()
    assert times[0] == np.datetime64("2000-01-01") + 32  # the target's time


def test_eval_split_must_follow_the_training_split(tmp_path: Path, deepyard_cache: Path) -> None:
    values = series(40)
    train = write_series(tmp_path / "train.parquet", values[:32])
    test = write_series(tmp_path / "test.parquet", values[32:], start=10)
    with pytest.raises(DataError, match=r"data\.eval must hold the points that follow data\.train"):
        resolve_sources(windowed_spec(train, test).data)


@pytest.mark.parametrize(
    ("column", "match"),
    [
        ("missing", r"column 'missing' not found.*set data.window.column"),
        ("name", r"column 'name' has type string; a series must be numbers"),
        ("gappy", r"column 'gappy' has 1 missing or non-finite values"),
    ],
)
def test_bad_series_columns(tmp_path: Path, deepyard_cache: Path, column: str, match: str) -> None:
    values = series(40)
    extra = {"name": pa.array(["x"] * 32), "gappy": pa.array([1.0] * 31 + [None])}
    train = write_series(tmp_path / "train.parquet", values[:32], **extra)
    test = write_series(tmp_path / "test.parquet", values[32:], start=32)
    spec = windowed_spec(train, test, f"data.window.column={column}")
    with pytest.raises(DataError, match=match):
        resolve_sources(spec.data)
