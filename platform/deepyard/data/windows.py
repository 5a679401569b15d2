"""Windowed series: a forecaster's rows, cut from a time series before launch.

Data flow: a series split (the packaged `co2` / `airline`, or the job's own data.train
and data.eval Parquet with a numeric column, in time order) → `resolve()` on the driver
(`deepyard.data.resolve_sources`, when the spec has `data.window`) → windowed Parquet,
train.parquet and test.parquet, with `features` (the `input_steps` values before the
forecast, shape (input_steps, 1)), `label` (the value `horizon` steps after the last
input) and `time` (the target's time, where the series has one) → the usual loaders,
the labels read as values (`label_kind="values"`).

No test value reaches a training row: a training window's target and inputs all lie in
the training split. Every test point is the target of one test window, whose inputs are
the values before it, the end of the training split included, so the first test points
are forecast too (inputs are values already observed at forecast time).

Rows are normalised with statistics of the training split only, recorded in the files'
metadata (`deepyard.window`: `WindowInfo`):
- center "last" (default): inputs and target minus the window's last input (the model
  predicts the change), divided by the standard deviation of the training split's
  horizon-step changes;
- center "mean": minus the training split's mean, divided by its standard deviation.
Both are linear per row, so an error e in model units is e x `scale` in the series'
units, and the seasonal-naive forecast of a target (the value one season before it) is
one of the normalised inputs, at `WindowInfo.naive_index`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from deepyard.data.convert import KIND_KEY, feature_array, write_table
from deepyard.data.parquet import SHAPE_KEY, WINDOW_KEY, open_dataset
from deepyard.errors import DataError, SpecError

if TYPE_CHECKING:
    from deepyard.spec import DataSpec
    from deepyard.spec.window import WindowSpec

TIME = "time"


@dataclass(frozen=True)
class WindowInfo:
    """How a windowed split was made: enough to score forecasts in the series' units."""

    column: str
    input_steps: int
    horizon: int
    season: int  # the seasonal-naive forecast is the value this many steps before the target
    center: str  # "last" or "mean"
    offset: float  # the training mean (center "mean"); 0 for "last"
    scale: float  # series units per model unit
    train_points: int  # points of the training series the statistics came from

    @property
    def naive_index(self) -> int:
        """The input that holds the target's value one season earlier."""
        return self.input_steps - 1 + self.horizon - self.season

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True).encode()

    @classmethod
    def from_json(cls, raw: bytes | str) -> WindowInfo:
        return cls(**json.loads(raw))


@dataclass(frozen=True)
class Windows:
    """Normalised rows: inputs (k, input_steps) and targets (k,), float64."""

    inputs: np.ndarray
    targets: np.ndarray


def cut(values: np.ndarray, targets: range, input_steps: int, horizon: int) -> np.ndarray:
    """Raw windows (k, input_steps + 1): each target's `input_steps` inputs, ending
    `horizon` steps before it, then the target itself."""
    rows = [
        np.append(values[t - horizon - input_steps + 1 : t - horizon + 1], values[t])
        for t in targets
    ]
    return np.array(rows, dtype=np.float64).reshape(len(rows), input_steps + 1)


def statistics(train: np.ndarray, horizon: int, center: str) -> tuple[float, float]:
    """(offset, scale) from the training split alone."""
    if center == "mean":
        return float(train.mean()), float(train.std())
    return 0.0, float((train[horizon:] - train[:-horizon]).std())


def normalise(raw: np.ndarray, info: WindowInfo) -> Windows:
    base = raw[:, -2:-1] if info.center == "last" else info.offset
    rows = (raw - base) / info.scale
    return Windows(rows[:, :-1], rows[:, -1])


def make(
    train: np.ndarray, test: np.ndarray, spec: WindowSpec, column: str = "value"
) -> tuple[Windows, Windows, WindowInfo]:
    """(train windows, test windows, info) of a series split at len(train)."""
    n, h = spec.input_steps, spec.horizon
    check_length(len(train), len(test), spec)
    offset, scale = statistics(train, h, spec.center)
    if not scale > 0:
        raise DataError(
            f"column {column!r} does not vary over the training split ({len(train)} points), "
            "so there is nothing to forecast; check data.window.column"
        )
    info = WindowInfo(column, n, h, spec.season or h, spec.center, offset, scale, len(train))
    series = np.concatenate([train, test])
    train_rows = cut(train, range(n + h - 1, len(train)), n, h)
    test_rows = cut(series, range(len(train), len(series)), n, h)
    return normalise(train_rows, info), normalise(test_rows, info), info


def check_length(train_points: int, test_points: int, spec: WindowSpec) -> None:
    """At least one training window, and a test point to forecast."""
    need = spec.input_steps + spec.horizon
    if train_points < need:
        raise SpecError(
            f"data.window.input_steps={spec.input_steps} + horizon={spec.horizon} needs at "
            f"least {need} points in the training split, which has {train_points}; use "
            f"input_steps <= {max(1, train_points - spec.horizon)} (or more data)"
        )
    if test_points < 1:
        raise SpecError(
            "data.window needs test points to forecast, and the eval split is empty; point "
            "data.eval at the points that follow data.train"
        )


def resolve(data: DataSpec) -> tuple[str, str | None]:
    """Windowed (train, test) Parquet for a windowed spec, written into the cache."""
    from deepyard.data import packaged
    from deepyard.data.packaged_sources import cache_root

    spec = data.window
    assert spec is not None
    key = f"{spec.column}-n{spec.input_steps}-h{spec.horizon}-s{spec.season}-{spec.center}"
    test_uri: str | None
    if data.dataset is not None:
        train_path, test_path = packaged.ensure_prepared(data.dataset)
        train_uri, test_uri = str(train_path), str(test_path)
        out = packaged.cache_dir() / data.dataset / "windows" / key
    else:
        assert data.train is not None
        train_uri, test_uri = data.train, data.eval
        digest = hashlib.sha256(f"{train_uri}\n{test_uri}\n{key}".encode()).hexdigest()
        out = cache_root() / "windows" / digest[:16]
    train_values, train_times = read_series(train_uri, spec.column)
    if test_uri is None:
        test_values, test_times = np.zeros(0), None
    else:
        test_values, test_times = read_series(test_uri, spec.column)
        check_follows(train_times, test_times, train_uri, test_uri)
    train_rows, test_rows, info = make(train_values, test_values, spec, spec.column)
    out.mkdir(parents=True, exist_ok=True)
    first = spec.input_steps + spec.horizon - 1
    write(out / "train.parquet", train_rows, info, _tail(train_times, first))
    if test_uri is None:
        return str(out / "train.parquet"), None
    write(out / "test.parquet", test_rows, info, test_times)
    return str(out / "train.parquet"), str(out / "test.parquet")


def read_series(uri: str, column: str) -> tuple[np.ndarray, np.ndarray | None]:
    """A series column (float64) and its `time` column where there is one, in file order."""
    dataset = open_dataset(uri)
    if column not in dataset.schema.names:
        raise DataError(
            f"{uri}: column {column!r} not found; the dataset has: "
            f"{', '.join(dataset.schema.names)} (set data.window.column)"
        )
    columns = [column] + ([TIME] if TIME in dataset.schema.names else [])
    table = dataset.to_table(columns=columns)
    kind = table.schema.field(column).type
    if not (pa.types.is_floating(kind) or pa.types.is_integer(kind)):
        raise DataError(
            f"{uri}: column {column!r} has type {kind}; a series must be numbers "
            "(set data.window.column to a numeric column)"
        )
    filled = pc.fill_null(table.column(column).cast(pa.float64()), float("nan"))
    values = filled.to_numpy(zero_copy_only=False)
    missing = int(np.count_nonzero(~np.isfinite(values)))
    if missing:
        raise DataError(
            f"{uri}: column {column!r} has {missing} missing or non-finite values; fill "
            "them (e.g. interpolate) before windowing"
        )
    times = table.column(TIME).to_numpy() if TIME in columns else None
    if times is not None and len(times) > 1 and not (times[1:] > times[:-1]).all():
        raise DataError(f"{uri}: column {TIME!r} is not increasing; sort the series by time")
    return values, times


def check_follows(
    train: np.ndarray | None, test: np.ndarray | None, train_uri: str, test_uri: str
) -> None:
    """The eval split must continue the training split in time (where both have times)."""
    if train is None or test is None or not len(train) or not len(test):
        return
    if not test[0] > train[-1]:
        raise DataError(
            f"{test_uri} starts at {test[0]}, not after the end of {train_uri} ({train[-1]}); "
            "data.eval must hold the points that follow data.train in time"
        )


def write(path: Path, rows: Windows, info: WindowInfo, times: np.ndarray | None) -> None:
    """One windowed split: features (input_steps, 1) float32, label float32, time."""
    columns: dict[str, Any] = {
        "features": feature_array(rows.inputs),
        "label": pa.array(rows.targets.astype(np.float32)),
    }
    if times is not None:
        columns[TIME] = pa.array(times)
    meta = {
        SHAPE_KEY: json.dumps([info.input_steps, 1]).encode(),
        KIND_KEY: b"windows",
        WINDOW_KEY: info.to_json(),
    }
    write_table(path, pa.table(columns).replace_schema_metadata(meta))


def _tail(times: np.ndarray | None, first: int) -> np.ndarray | None:
    return None if times is None else times[first:]
