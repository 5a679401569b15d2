"""Your own data → deepyard's Parquet layout (`deepyard data convert FORMAT SRC OUT`).

Data flow: a CSV or JSON Lines file (streamed with pyarrow, never whole in memory), or a
folder `SRC/<class_name>/*.png|jpg` (convert_images.py) → columns `features` (fixed-size
float32 list), `text` (string, optional) and `label` (int64 class ids 0..C-1) with schema
metadata (`deepyard.num_classes`, `deepyard.shape`, `deepyard.label_names`) → OUT, one
Parquet file, or OUT/part-NNNNN.parquet once there are more than ROWS_PER_FILE rows →
`read_split()` and the training pipeline.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.json as pajson
import pyarrow.parquet as pq

from deepyard.data.parquet import CLASSES_KEY, SHAPE_KEY
from deepyard.errors import DataError

LABEL_NAMES_KEY = b"deepyard.label_names"
KIND_KEY = b"deepyard.kind"
ROW_GROUP_ROWS = 65536
ROW_GROUP_BYTES = 64 << 20  # wide rows (images) get fewer rows per group
GROUPS_PER_FILE = 16
CSV_BLOCK_BYTES = 1 << 20  # also how much of a CSV its column types are guessed from


@dataclass(frozen=True)
class ConvertOptions:
    """What `deepyard data convert` was told; each converter checks what applies to it."""

    label: str | None = None
    features: list[str] | None = None
    text: str | None = None
    label_names: list[str] | None = None
    size: tuple[int, int] | None = None  # (height, width)
    channels: int | None = None


def convert(fmt: str, src: Path, out: Path, options: ConvertOptions) -> list[Path]:
    """Convert SRC into OUT; returns the Parquet files written."""
    from deepyard.data.convert_images import convert_images

    converters: dict[str, Callable[[Path, Path, ConvertOptions], list[Path]]] = {
        "csv": lambda s, o, opts: convert_table("csv", s, o, opts),
        "jsonl": lambda s, o, opts: convert_table("jsonl", s, o, opts),
        "images": convert_images,
    }
    if fmt not in converters:
        raise DataError(f"unknown format {fmt!r}; use one of: {', '.join(converters)}")
    if not src.exists():
        raise DataError(f"{src} does not exist; check the path")
    return converters[fmt](src, out, options)


def refuse_options(fmt: str, options: ConvertOptions, names: list[str]) -> None:
    """A given option that this format ignores is a mistake: say so instead of ignoring it."""
    given = [n for n in names if getattr(options, n) is not None]
    if given:
        flags = ", ".join("--" + n.replace("_", "-") for n in given)
        raise DataError(f"{flags} do not apply to `deepyard data convert {fmt}`; leave them out")


# writing ---------------------------------------------------------------------------


def table_metadata(
    num_classes: int,
    label_names: list[str] | None = None,
    shape: list[int] | None = None,
    kind: str | None = None,
) -> dict[bytes, bytes]:
    meta = {CLASSES_KEY: str(num_classes).encode()}
    if label_names is not None:
        meta[LABEL_NAMES_KEY] = json.dumps(label_names).encode()
    if shape is not None:
        meta[SHAPE_KEY] = json.dumps(shape).encode()
    if kind is not None:
        meta[KIND_KEY] = kind.encode()
    return meta


def write_table(path: Path, table: pa.Table) -> None:
    """One small table, written atomically (a reader never sees half a file)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    pq.write_table(table, tmp, compression="zstd", row_group_size=ROW_GROUP_ROWS)
    tmp.replace(path)


def feature_array(values: np.ndarray) -> pa.FixedSizeListArray:
    """(N, ...) numbers → a fixed-size float32 list per row."""
    flat = np.ascontiguousarray(values.reshape(len(values), -1), dtype=np.float32)
    return pa.FixedSizeListArray.from_arrays(pa.array(flat.ravel()), flat.shape[1])


class ParquetSink:
    """Record batches → row groups of ~ROW_GROUP_ROWS rows → OUT, or OUT/part-NNNNN.parquet.

    Files are written under a temporary folder beside OUT and moved into place on a clean
    exit; an error leaves OUT as it was.
    """

    def __init__(self, out: Path, schema: pa.Schema, row_bytes: int) -> None:
        self.out = out
        self.schema = schema
        self.group_rows = max(64, min(ROW_GROUP_ROWS, ROW_GROUP_BYTES // max(row_bytes, 1)))
        self.num_rows = 0
        self._tmp = out.parent / f".{out.name}.{os.getpid()}.tmp"
        self._pending: list[pa.RecordBatch] = []
        self._pending_rows = 0
        self._writer: pq.ParquetWriter | None = None
        self._parts: list[Path] = []
        self._groups_in_file = 0

    def __enter__(self) -> ParquetSink:
        shutil.rmtree(self._tmp, ignore_errors=True)
        self._tmp.mkdir(parents=True)
        return self

    def write(self, batch: pa.RecordBatch) -> None:
        self._pending.append(batch)
        self._pending_rows += batch.num_rows
        self.num_rows += batch.num_rows
        while self._pending_rows >= self.group_rows:
            self._flush(self.group_rows)

    def _flush(self, rows: int) -> None:
        table = pa.Table.from_batches(self._pending, self.schema)
        if self._writer is None or self._groups_in_file >= GROUPS_PER_FILE:
            self._next_file()
        assert self._writer is not None
        self._writer.write_table(table.slice(0, rows), row_group_size=rows)
        self._groups_in_file += 1
        rest = table.slice(rows)
        self._pending, self._pending_rows = rest.to_batches(), rest.num_rows

    def _next_file(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._parts.append(self._tmp / f"part-{len(self._parts):05d}.parquet")
        self._writer = pq.ParquetWriter(self._parts[-1], self.schema, compression="zstd")
        self._groups_in_file = 0

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if exc_type is None and self.num_rows:
                if self._pending_rows:
                    self._flush(self._pending_rows)
                assert self._writer is not None
                self._writer.close()
                self._writer = None
                self._place()
        finally:
            if self._writer is not None:
                self._writer.close()
            shutil.rmtree(self._tmp, ignore_errors=True)

    def _place(self) -> None:
        if len(self._parts) == 1 and not self.out.is_dir():
            self._parts[0].replace(self.out)
            self._parts = [self.out]
            return
        if self.out.is_file():
            self.out.unlink()
        self.out.mkdir(parents=True, exist_ok=True)
        for old in self.out.glob("part-*.parquet"):
            old.unlink()
        self._parts = [part.replace(self.out / part.name) for part in self._parts]

    @property
    def paths(self) -> list[Path]:
        return list(self._parts)


# CSV and JSON Lines ----------------------------------------------------------------


@dataclass(frozen=True)
class _Plan:
    features: list[str]
    text: str | None
    label: str
    label_names: list[str] | None
    num_classes: int


def convert_table(fmt: str, src: Path, out: Path, options: ConvertOptions) -> list[Path]:
    refuse_options(fmt, options, ["size", "channels"])
    schema = _open(fmt, src).schema
    plan = _plan(fmt, src, schema, options)
    meta = table_metadata(
        plan.num_classes,
        plan.label_names,
        [len(plan.features)] if plan.features else None,
        "text" if plan.text else None,
    )
    fields = []
    if plan.features:
        fields.append(pa.field("features", pa.list_(pa.float32(), len(plan.features))))
    if plan.text:
        fields.append(pa.field("text", pa.string()))
    fields.append(pa.field("label", pa.int64()))
    out_schema = pa.schema(fields, metadata=meta)
    columns = [*plan.features, *([plan.text] if plan.text else []), plan.label]
    with ParquetSink(out, out_schema, 4 * len(plan.features) + 256) as sink:
        for batch in _batches(fmt, src, columns):
            sink.write(_transform(batch, plan, src, out_schema))
    return sink.paths


def _open(fmt: str, src: Path, columns: list[str] | None = None) -> pa.RecordBatchReader:
    try:
        if fmt == "csv":
            return pacsv.open_csv(
                src,
                read_options=pacsv.ReadOptions(block_size=CSV_BLOCK_BYTES),
                parse_options=pacsv.ParseOptions(newlines_in_values=True),
                convert_options=pacsv.ConvertOptions(include_columns=columns),
            )
        return pajson.open_json(src)
    except (OSError, pa.ArrowInvalid) as exc:
        if src.is_file() and src.stat().st_size == 0:
            raise DataError(f"{src} is empty; convert a file with a header and rows") from None
        raise DataError(f"cannot read {src} as {fmt}: {exc}") from exc


def _batches(fmt: str, src: Path, columns: list[str]) -> Iterator[pa.RecordBatch]:
    reader = _open(fmt, src, columns if fmt == "csv" else None)
    try:
        for batch in reader:
            yield batch.select(columns)
    except (OSError, pa.ArrowInvalid) as exc:
        where = "a column"
        number = re.search(r"CSV column #(\d+)", str(exc))
        if number:
            where = f"column {_open(fmt, src).schema.names[int(number.group(1))]!r}"
        raise DataError(
            f"cannot read {src}: {exc}; {where} holds values of different kinds (e.g. text "
            "in a number column): fix those rows, or leave the column out with --features"
        ) from exc


def _plan(fmt: str, src: Path, schema: pa.Schema, options: ConvertOptions) -> _Plan:
    names = schema.names
    label = options.label
    if label is None:
        raise DataError(
            f"`deepyard data convert {fmt}` needs --label COLUMN; {src} has columns: "
            f"{', '.join(names)}"
        )
    asked = [label, *(options.features or []), *([options.text] if options.text else [])]
    for column in asked:
        if column not in names:
            raise DataError(
                f"column {column!r} not found in {src}; it has: {', '.join(names)} "
                "(check --label / --features / --text)"
            )
    if len(set(asked)) < len(asked):
        raise DataError(f"--label, --features and --text name the same column twice in {asked}")
    label_names, num_classes, num_rows = _scan_labels(fmt, src, label, options.label_names)
    if not num_rows:
        raise DataError(f"{src} has no rows; convert a file with data in it")
    features = options.features
    if features is None:
        features = [] if options.text else [n for n in names if n != label and _numeric(schema, n)]
    for column in features:
        if not _numeric(schema, column):
            raise DataError(
                f"column {column!r} in {src} has type {schema.field(column).type}, not numbers; "
                "leave it out of --features (or keep it as text with --text)"
            )
    if not features and not options.text:
        raise DataError(
            f"{src} has no numeric column besides the label {label!r}; "
            "name feature columns with --features or a text column with --text"
        )
    return _Plan(features, options.text, label, label_names, num_classes)


def _numeric(schema: pa.Schema, name: str) -> bool:
    kind = schema.field(name).type
    return pa.types.is_integer(kind) or pa.types.is_floating(kind)


def _scan_labels(
    fmt: str, src: Path, label: str, given: list[str] | None
) -> tuple[list[str] | None, int, int]:
    """First pass over the label column: (label names or None, classes, rows)."""
    values: set[Any] = set()
    kind, num_rows = pa.null(), 0
    for batch in _batches(fmt, src, [label]):
        column = batch.column(0)
        kind, num_rows = column.type, num_rows + len(column)
        if column.null_count:
            raise DataError(
                f"label column {label!r} in {src} has missing values; fill or drop those rows"
            )
        values.update(pc.unique(column).to_pylist())
    if given is not None:
        unknown = sorted(str(v) for v in values if str(v) not in given)
        if unknown:
            raise DataError(
                f"label column {label!r} in {src} holds {', '.join(unknown[:5])}, not in "
                "--label-names; add them there"
            )
        return given, len(given), num_rows
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        names = sorted(values)
        return names, len(names), num_rows
    if not (pa.types.is_integer(kind) or pa.types.is_boolean(kind) or pa.types.is_null(kind)):
        raise DataError(
            f"label column {label!r} in {src} has type {kind}; use integer class ids 0..C-1 "
            "or class names (text)"
        )
    ids = [int(v) for v in values]
    if ids and min(ids) < 0:
        raise DataError(f"label column {label!r} in {src} has negative values; use ids 0..C-1")
    return None, max(ids, default=-1) + 1, num_rows


def _transform(batch: pa.RecordBatch, plan: _Plan, src: Path, schema: pa.Schema) -> pa.RecordBatch:
    arrays: list[pa.Array] = []
    if plan.features:
        columns = []
        for name in plan.features:
            column = batch.column(name)
            if column.null_count:
                raise DataError(
                    f"feature column {name!r} in {src} has missing values; fill or drop them"
                )
            columns.append(column.to_numpy(zero_copy_only=False))
        arrays.append(feature_array(np.stack(columns, axis=1)))
    if plan.text:
        text = batch.column(plan.text)
        if text.null_count:
            raise DataError(f"text column {plan.text!r} in {src} has missing values; fill them")
        arrays.append(pc.cast(text, pa.string()))
    arrays.append(_label_ids(batch.column(plan.label), plan.label_names))
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def _label_ids(column: pa.Array, names: list[str] | None) -> pa.Array:
    if names is None:
        return pc.cast(column, pa.int64())
    ids = pc.index_in(pc.cast(column, pa.string()), value_set=pa.array(names, pa.string()))
    return pc.cast(ids, pa.int64())
