"""A Parquet dataset as a list of row groups with global row offsets.

The unit of reading is the row group: one file of any size splits across ranks, and a
reader holds only the row groups of its current shuffle window in memory. In text mode
(a `text` column and a tokenizer) a read returns each row's token ids instead of a
feature matrix; the caller's reader thread does the tokenizing (deepyard.data.text).
Labels are class ids, or numbers to predict where the model's task reads values
(`label_kind="values"`: float32, and `num_classes` is 1, one output per row).
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from deepyard.data import text as text_ids
from deepyard.data.labels import check_class_ids, training_classes_fix
from deepyard.data.parquet import (
    CLASSES_KEY,
    SHAPE_KEY,
    check_columns,
    features_to_numpy,
    labels_to_numpy,
)
from deepyard.errors import DataError
from deepyard.tasks.catalog import LabelKind

if TYPE_CHECKING:
    from tokenizers import Tokenizer


@dataclass(frozen=True)
class RowGroup:
    path: str
    index: int  # row group number inside the file
    num_rows: int


class ParquetSource:
    """Row groups of a Parquet file, directory or URI, in a deterministic (path) order."""

    def __init__(
        self,
        uri: str,
        features: str,
        label: str,
        *,
        text: str | None = None,
        tokenizer: Tokenizer | None = None,
        label_kind: LabelKind = "classes",
    ) -> None:
        if (text is None) != (tokenizer is None):
            raise ValueError("a text column needs a tokenizer, and a tokenizer a text column")
        if tokenizer is not None and not tokenizer.truncation:
            raise ValueError("load the tokenizer with deepyard.data.text.load_tokenizer")
        self.uri = uri
        self.features = features
        self.label = label
        self.label_kind = label_kind
        self.text, self.tokenizer = text, tokenizer
        # Text mode: ids padded per batch with this id (deepyard.data.text.pad_batch).
        self.pad_id = None if tokenizer is None else text_ids.pad_id(tokenizer)
        self._inputs = features if text is None else text
        # A task that reads no labels (a language model's targets are its next tokens)
        # does not need the column; where it is there, it is read as usual.
        needs_label = [] if label_kind == "none" else [label]
        dataset = check_columns(uri, needs_label if text else [features, *needs_label])
        self.has_labels = label in dataset.schema.names
        if text is not None and text not in dataset.schema.names:
            raise DataError(
                f"column {text} not found; the dataset has: {', '.join(dataset.schema.names)} "
                "(set data.text)"
            )
        self.filesystem = dataset.filesystem
        self.schema = dataset.schema
        self.row_groups: list[RowGroup] = []
        self._first_rows: dict[tuple[str, int], int] = {}  # a row group's first row in its file
        for fragment in sorted(dataset.get_fragments(), key=lambda f: f.path):
            try:
                meta = fragment.metadata
            except (OSError, pa.ArrowInvalid) as exc:
                raise DataError(
                    f"{fragment.path}: not a readable Parquet file ({exc}); it may be corrupt "
                    "or truncated: rewrite it, or remove it from the dataset"
                ) from exc
            first_row = 0
            for index in range(meta.num_row_groups):
                rows = meta.row_group(index).num_rows
                if rows:
                    self.row_groups.append(RowGroup(fragment.path, index, rows))
                    self._first_rows[(fragment.path, index)] = first_row
                first_row += rows
        if not self.row_groups:
            raise DataError(f"{uri} has no rows; point the job at a non-empty dataset")
        self._files: dict[str, pq.ParquetFile] = {}
        self._lock = threading.Lock()  # a ParquetFile reader is not safe across threads

    @property
    def num_rows(self) -> int:
        return sum(g.num_rows for g in self.row_groups)

    @cached_property
    def input_shape(self) -> tuple[int, ...]:
        """Per-row input shape; in text mode (max_length,), the longest a row's ids get."""
        if self.tokenizer is not None:
            truncation = self.tokenizer.truncation
            assert truncation is not None  # checked in __init__
            return (int(truncation["max_length"]),)
        meta = self.schema.metadata or {}
        if SHAPE_KEY in meta:
            return tuple(int(s) for s in json.loads(meta[SHAPE_KEY]))
        inputs, _ = self.read([self.row_groups[0]])
        return tuple(inputs.shape[1:])

    @cached_property
    def num_classes(self) -> int:
        if self.label_kind == "values" or not self.has_labels:
            return 1
        meta = self.schema.metadata or {}
        if CLASSES_KEY in meta:
            return int(meta[CLASSES_KEY])
        top = 0  # no metadata: one pass over the label column alone
        for group in self.row_groups:
            labels = labels_to_numpy(
                self._read_table([group], [self.label]).column(0), group.path, self.label
            )
            top = max(top, int(labels.max()))
        return top + 1

    def read(self, groups: list[RowGroup]) -> tuple[np.ndarray, np.ndarray]:
        """(features (n, d) float32, labels (n,) int64 or float32) of these row groups.

        In text mode the inputs are each row's token ids: an (n,) object array of int64
        arrays of different lengths (truncated, not padded)."""
        columns = [self._inputs, self.label] if self.has_labels else [self._inputs]
        table = self._read_table(groups, columns)
        where = groups[0].path if len(groups) == 1 else self.uri
        labels = (
            labels_to_numpy(table.column(1), where, self.label, self.label_kind)
            if self.has_labels
            else np.zeros(table.num_rows, dtype=np.int64)
        )
        if self.has_labels and self.label_kind == "classes":
            self._check_classes(groups, labels)
        if self.tokenizer is None:
            return features_to_numpy(table.column(0), where, self.features), labels
        texts = texts_of(table.column(0), where, self._inputs)
        return text_ids.encode(self.tokenizer, texts), labels

    def _check_classes(self, groups: list[RowGroup], labels: np.ndarray) -> None:
        """Every class id below num_classes, or an error naming the file and its row."""
        fix = training_classes_fix(self.uri, self.num_classes)
        start = 0
        for group in groups:
            first = self._first_rows[(group.path, group.index)]
            part = labels[start : start + group.num_rows]
            check_class_ids(part, self.num_classes, group.path, self.label, fix, first)
            start += group.num_rows

    def _read_table(self, groups: list[RowGroup], columns: list[str]) -> pa.Table:
        with self._lock:
            return self._read_locked(groups, columns)

    def _read_locked(self, groups: list[RowGroup], columns: list[str]) -> pa.Table:
        parts = []
        for group in groups:
            try:
                parts.append(self._file(group.path).read_row_group(group.index, columns=columns))
            except (OSError, pa.ArrowInvalid) as exc:
                raise DataError(
                    f"{group.path}: cannot read row group {group.index} ({exc}); the file may "
                    "be corrupt or truncated: rewrite it, or remove it from the dataset"
                ) from exc
        return pa.concat_tables(parts)

    def _file(self, path: str) -> pq.ParquetFile:
        if path not in self._files:
            # Page checksums, where the writer stored them, catch flipped bytes that would
            # otherwise decode into silently wrong samples.
            local = isinstance(self.filesystem, pafs.LocalFileSystem)
            self._files[path] = pq.ParquetFile(
                path if local else self.filesystem.open_input_file(path),
                memory_map=local,  # local files: no copy through a read buffer
                page_checksum_verification=True,
            )
        return self._files[path]


def texts_of(column: pa.ChunkedArray, uri: str, name: str) -> list[str]:
    if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
        raise DataError(
            f"{uri}: text column {name!r} has type {column.type}; data.text must name a "
            "column of strings"
        )
    if column.null_count:
        raise DataError(
            f"{uri}: text column {name!r} has {column.null_count} missing values; drop those "
            "rows or fill them with empty strings"
        )
    return column.to_pylist()
