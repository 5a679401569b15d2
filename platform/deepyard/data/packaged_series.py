"""Packaged time series → columns `time` (timestamp) and `value` (float64), in time order.

Each is written whole (OUT/series.parquet) and split by time: the first 80% of the
points in OUT/train.parquet, the last 20% in OUT/test.parquet. Schema metadata
`deepyard.kind` is `timeseries`.

- co2: weekly Mauna Loa CO2 (ppmv), March 1958 - December 2001, 2,284 weeks, from
  statsmodels (`statsmodels.datasets.co2`; the `datasets` extra). The 59 weeks without a
  measurement are filled by linear interpolation in time.
- airline: monthly international airline passengers, 1949-1960, 144 months (Box & Jenkins
  series G), the CSV inside PyPI package `sktime` (read from the installed package or its
  wheel; sktime itself is never imported).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from deepyard.data.convert import KIND_KEY, write_table
from deepyard.data.packaged_sources import SKTIME_WHEEL, TRAIN_FRACTION, wheel_dir, wheel_file
from deepyard.errors import DataError

AIRLINE_FILE = "sktime/datasets/data/Airline/Airline.csv"


def write_series(out: Path, time: pa.Array, value: pa.Array) -> list[Path]:
    """OUT/series.parquet (all), then train.parquet and test.parquet (split by time)."""
    table = pa.table({"time": time.cast(pa.timestamp("us")), "value": value.cast(pa.float64())})
    table = table.replace_schema_metadata({KIND_KEY: b"timeseries"})
    cut = int(table.num_rows * TRAIN_FRACTION)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "series.parquet", out / "train.parquet", out / "test.parquet"]
    for path, part in zip(paths, (table, table.slice(0, cut), table.slice(cut)), strict=True):
        write_table(path, part)
    return paths


def co2(out: Path) -> list[Path]:
    try:
        from statsmodels.datasets import co2 as co2_data
    except ImportError as exc:
        raise DataError(
            f"co2 needs statsmodels ({exc}); install it with `pip install 'deepyard[datasets]'`"
        ) from exc
    series = co2_data.load_pandas().data["co2"].interpolate(method="time")
    times = np.asarray(series.index.values, dtype="datetime64[us]")
    return write_series(out, pa.array(times), pa.array(series.to_numpy(dtype=np.float64)))


def airline(out: Path) -> list[Path]:
    raw = wheel_file(*SKTIME_WHEEL, AIRLINE_FILE)
    try:
        table = pacsv.read_csv(
            pa.BufferReader(raw),
            convert_options=pacsv.ConvertOptions(
                column_types={"Date": pa.timestamp("us"), "Passengers": pa.float64()},
                timestamp_parsers=["%Y-%m"],
            ),
        )
        time, value = table["Date"], table["Passengers"]
    except (pa.ArrowInvalid, KeyError) as exc:
        raise DataError(
            f"cannot read {AIRLINE_FILE}: {exc}; download the wheel again with "
            f"`pip download --no-deps {SKTIME_WHEEL[0]}=={SKTIME_WHEEL[1]} -d {wheel_dir()}`"
        ) from exc
    return write_series(out, time.combine_chunks(), value.combine_chunks())
