"""Parquet on any pyarrow filesystem → in-memory tensors, with errors that name the fix.

The dataset's schema metadata may carry `deepyard.shape` (the per-sample input shape,
JSON) and `deepyard.num_classes`; `deepyard data prepare` writes both. Windowed series
(deepyard.data.windows) also carry `deepyard.window`, how their rows were made.

Labels are read as the model's task says (`deepyard.tasks.catalog.LabelKind`): "classes"
are int64 class ids 0..C-1, "values" are float32 numbers to predict (regression).
"""

from __future__ import annotations

import fnmatch
import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import torch

from deepyard.data.labels import check_class_ids, class_ids_fix
from deepyard.errors import DataError
from deepyard.tasks.catalog import LabelKind

if TYPE_CHECKING:
    from deepyard.data.windows import WindowInfo

SHAPE_KEY = b"deepyard.shape"
CLASSES_KEY = b"deepyard.num_classes"
WINDOW_KEY = b"deepyard.window"


def is_local(uri: str) -> bool:
    return "://" not in uri or uri.startswith("file://")


def _format() -> ds.ParquetFileFormat:
    """Parquet that verifies page checksums where the writer stored them."""
    scan = ds.ParquetFragmentScanOptions(page_checksum_verification=True)
    return ds.ParquetFileFormat(default_fragment_scan_options=scan)


def open_dataset(uri: str) -> ds.Dataset:
    """A Parquet file, a directory of them, or a glob (`data/part-*.parquet`), on the local
    disk or any pyarrow.fs URI (file://, s3://, gs://, ...)."""
    try:
        if is_local(uri):
            fs: pafs.FileSystem = pafs.LocalFileSystem()
            path = str(Path(uri.removeprefix("file://")).absolute())
        else:
            fs, path = pafs.FileSystem.from_uri(uri)
        target: str | list[str] = _expand_glob(fs, path, uri) if _is_glob(path) else path
        if isinstance(target, str) and fs.get_file_info(target).type == pafs.FileType.NotFound:
            raise DataError(f"{uri} does not exist; check the path or run `deepyard data prepare`")
        return ds.dataset(target, filesystem=fs, format=_format())
    except DataError:
        raise
    except (OSError, pa.ArrowInvalid) as exc:
        raise DataError(
            f"cannot open Parquet dataset {uri}: {exc}; check the URI, that its storage is "
            "reachable from every worker, and its credentials"
        ) from exc


def _is_glob(path: str) -> bool:
    return any(ch in path for ch in "*?[")


def _expand_glob(fs: pafs.FileSystem, path: str, uri: str) -> list[str]:
    """Files matching a glob, sorted; the pattern's wildcards may sit in the last parts."""
    parts = path.split("/")
    fixed = next(i for i, part in enumerate(parts) if _is_glob(part))
    base = "/".join(parts[:fixed]) or "/"
    selector = pafs.FileSelector(base, recursive=len(parts) - fixed > 1, allow_not_found=True)
    matches = sorted(
        info.path
        for info in fs.get_file_info(selector)
        if info.type == pafs.FileType.File and fnmatch.fnmatchcase(info.path, path)
    )
    if not matches:
        raise DataError(f"{uri} matches no files; check the pattern")
    return matches


def check_columns(uri: str, columns: list[str]) -> ds.Dataset:
    dataset = open_dataset(uri)
    missing = [c for c in columns if c not in dataset.schema.names]
    if missing:
        raise DataError(
            f"column {', '.join(missing)} not found; the dataset has: "
            f"{', '.join(dataset.schema.names)} (set data.features / data.label)"
        )
    return dataset


@dataclass(frozen=True)
class TensorData:
    """A whole split in memory: inputs (N, *input_shape) float32 (or token ids int64,
    padded with `pad_id`), labels (N,) int64 (classes) or float32 (values; `num_classes`
    is then 1, one value per row). `window`: how a windowed series' rows were made
    (scale, season), else None."""

    inputs: torch.Tensor
    labels: torch.Tensor
    input_shape: tuple[int, ...]
    num_classes: int
    window: WindowInfo | None = field(default=None, kw_only=True)
    pad_id: int | None = field(default=None, kw_only=True)  # token ids: rows padded with it

    def __len__(self) -> int:
        return int(self.labels.shape[0])


def read_labelled(
    uri: str, column: str, label: str, field: str, label_kind: LabelKind = "classes"
) -> tuple[pa.Table, np.ndarray, int, dict[bytes, bytes]]:
    """A whole split read for evaluation: its table (`column`, `label`), the labels as
    int64, the number of classes (the file's metadata, else the largest label + 1) and the
    metadata. `field` names the spec field to fix when the split is empty. With
    `label_kind="values"` the labels are float32 and the number of classes is 1; with
    `label_kind="none"` a missing label column reads as zeros (one class)."""
    dataset = check_columns(uri, [column] if label_kind == "none" else [column, label])
    if label not in dataset.schema.names:
        label = ""
    try:
        table = dataset.to_table(columns=[column, label] if label else [column])
    except (OSError, pa.ArrowInvalid) as exc:
        raise DataError(f"cannot read {uri}: {exc}; the file may be corrupt or truncated") from exc
    if table.num_rows == 0:
        raise DataError(f"{uri} has no rows; point {field} at a non-empty dataset")
    meta = dataset.schema.metadata or {}
    if not label:
        return table, np.zeros(table.num_rows, dtype=np.int64), 1, meta
    if label_kind == "values":
        return table, values_to_numpy(table.column(label), uri, label), 1, meta
    ids = labels_to_numpy(table.column(label), uri, label, first_row=0)
    return table, ids, _num_classes(uri, label, ids, meta), meta


def _num_classes(uri: str, label: str, labels: np.ndarray, meta: dict[bytes, bytes]) -> int:
    num_classes = int(meta[CLASSES_KEY]) if CLASSES_KEY in meta else int(labels.max()) + 1
    fix = f"{class_ids_fix(num_classes)}, or correct the metadata {CLASSES_KEY.decode()}"
    check_class_ids(labels, num_classes, uri, label, fix)
    return num_classes


def read_split(
    uri: str, features: str, label: str, label_kind: LabelKind = "classes"
) -> TensorData:
    table, labels, num_classes, meta = read_labelled(
        uri, features, label, "data.train/data.eval", label_kind
    )
    inputs = features_to_numpy(table.column(features), uri, features)
    shape = tuple(json.loads(meta[SHAPE_KEY])) if SHAPE_KEY in meta else inputs.shape[1:]
    with warnings.catch_warnings():  # zero-copy over read-only Arrow memory; never written
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        tensor = torch.from_numpy(inputs)
    return TensorData(
        inputs=tensor.reshape(len(labels), *shape),
        labels=torch.from_numpy(labels),
        input_shape=tuple(int(s) for s in shape),
        num_classes=num_classes,
        window=_window(meta),
    )


def _window(meta: dict[bytes, bytes]) -> WindowInfo | None:
    if WINDOW_KEY not in meta:
        return None
    from deepyard.data.windows import WindowInfo

    return WindowInfo.from_json(meta[WINDOW_KEY])


def features_to_numpy(column: pa.ChunkedArray, uri: str, name: str) -> np.ndarray:
    arr = column.combine_chunks()
    if pa.types.is_fixed_size_list(arr.type) and arr.null_count == 0:
        values = arr.flatten().to_numpy(zero_copy_only=False)  # zero-copy for float32
        return values.astype(np.float32, copy=False).reshape(len(arr), arr.type.list_size)
    if pa.types.is_fixed_size_list(arr.type) or pa.types.is_list(arr.type):
        lengths = pc.list_value_length(arr)
        widths = pc.unique(lengths.fill_null(-1)).to_pylist()  # a null list is ragged too
        width = widths[0] if len(widths) == 1 else 0
        values = arr.flatten().to_numpy(zero_copy_only=False)
        if width <= 0 or len(values) != width * len(arr):
            raise DataError(f"{uri}: column {name!r} has lists of different lengths; pad them")
        return values.astype(np.float32, copy=False).reshape(len(arr), width)
    if pa.types.is_floating(arr.type) or pa.types.is_integer(arr.type):
        return arr.to_numpy(zero_copy_only=False).astype(np.float32).reshape(len(arr), 1)
    raise DataError(
        f"{uri}: column {name!r} has type {arr.type}; features must be numbers or lists of "
        "numbers (convert it with `deepyard data prepare` or pick another column)"
    )


def labels_to_numpy(
    column: pa.ChunkedArray,
    uri: str,
    name: str,
    label_kind: LabelKind = "classes",
    first_row: int | None = None,
) -> np.ndarray:
    """Class ids (int64) for a classification model; float32 values (label_kind "values").
    `first_row`: the row number of the column's first value in `uri`, where known."""
    if label_kind == "values":
        return values_to_numpy(column, uri, name)
    if not pa.types.is_integer(column.type):
        hint = (
            " (it holds real values: a model whose task predicts values, such as "
            "lstm-forecaster, trains on them; `deepyard models list` shows each task)"
            if pa.types.is_floating(column.type)
            else ""
        )
        raise DataError(
            f"{uri}: label column {name!r} has type {column.type}; labels must be integer "
            f"class ids 0..C-1{hint}"
        )
    if column.null_count:
        raise DataError(
            f"{uri}: label column {name!r} has {column.null_count} missing values; "
            "drop those rows or fill them with class ids 0..C-1"
        )
    labels = column.to_numpy().astype(np.int64)
    check_class_ids(labels, None, uri, name, class_ids_fix(None), first_row)
    return labels


def values_to_numpy(column: pa.ChunkedArray, uri: str, name: str) -> np.ndarray:
    """The label column of a regression split: finite numbers, as float32."""
    if not (pa.types.is_floating(column.type) or pa.types.is_integer(column.type)):
        raise DataError(
            f"{uri}: label column {name!r} has type {column.type}; this model predicts "
            "numbers (its task reads values), so the labels must be numbers: set data.label "
            "to a numeric column, or train a classification model on class labels"
        )
    filled = pc.fill_null(column.cast(pa.float64()), float("nan"))
    values = filled.to_numpy(zero_copy_only=False).astype(np.float32)
    missing = int(np.count_nonzero(~np.isfinite(values)))
    if missing:
        raise DataError(
            f"{uri}: label column {name!r} has {missing} missing or non-finite values; "
            "drop those rows or fill them (e.g. interpolate a series)"
        )
    return values


def write_split(path: Path, inputs: np.ndarray, labels: np.ndarray, num_classes: int) -> None:
    """Write one split atomically: features as fixed-size float32 lists + shape metadata."""
    flat = inputs.reshape(len(inputs), -1).astype(np.float32)
    values = pa.array(flat.ravel(), type=pa.float32())
    feats = pa.FixedSizeListArray.from_arrays(values, flat.shape[1])
    table = pa.table({"features": feats, "label": pa.array(labels.astype(np.int64))})
    table = table.replace_schema_metadata(
        {SHAPE_KEY: json.dumps(list(inputs.shape[1:])), CLASSES_KEY: str(num_classes)}
    )
    tmp = path.with_suffix(f".{os.getpid()}.tmp")  # ranks may prepare concurrently
    import pyarrow.parquet as pq

    pq.write_table(table, tmp, compression="zstd", row_group_size=8192, write_page_checksum=True)
    tmp.replace(path)
