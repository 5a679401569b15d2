"""Labels are read as the model's task says: class ids (classification, unchanged) or
numbers to predict (regression), with errors that name the column and the fix."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from deepyard.data import ParquetSource, read_split
from deepyard.data.ray_engine import decode_batch
from deepyard.errors import DataError


def write(path: Path, labels: Any) -> str:
    table = pa.table({"features": [[1.0, 2.0], [3.0, 4.0]], "label": labels})
    pq.write_table(table, path)
    return str(path)


def test_values_are_read_as_floats_with_one_output(tmp_path: Path) -> None:
    uri = write(tmp_path / "t.parquet", [0.25, -3.5])
    data = read_split(uri, "features", "label", "values")
    assert data.labels.dtype == torch.float32
    assert data.labels.tolist() == [0.25, -3.5]
    assert data.num_classes == 1  # one value per row
    source = ParquetSource(uri, "features", "label", label_kind="values")
    _, labels = source.read(source.row_groups)
    assert labels.dtype == np.float32 and labels.tolist() == [0.25, -3.5]
    assert source.num_classes == 1


def test_integer_values_are_numbers_too(tmp_path: Path) -> None:
    uri = write(tmp_path / "t.parquet", [3, 7])
    assert read_split(uri, "features", "label", "values").labels.tolist() == [3.0, 7.0]


def test_float_label_for_a_classification_model(tmp_path: Path) -> None:
    uri = write(tmp_path / "t.parquet", [0.5, 1.5])
    with pytest.raises(DataError) as err:
        read_split(uri, "features", "label")
    message = str(err.value)
    assert "label column 'label' has type double; labels must be integer class ids" in message
    assert "lstm-forecaster" in message  # the fix: a model that predicts values
    with pytest.raises(DataError, match="integer class ids"):
        ParquetSource(uri, "features", "label").num_classes  # noqa: B018


@pytest.mark.parametrize(
    ("labels", "match"),
    [
        (["a", "b"], r"label column 'label' has type string; this model predicts numbers"),
        (pa.array([1.0, None]), r"label column 'label' has 1 missing or non-finite values"),
        ([1.0, float("nan")], r"label column 'label' has 1 missing or non-finite values"),
    ],
)
def test_bad_values_for_a_regression_model(tmp_path: Path, labels: Any, match: str) -> None:
    uri = write(tmp_path / "t.parquet", labels)
    with pytest.raises(DataError, match=match):
        read_split(uri, "features", "label", "values")
    source = ParquetSource(uri, "features", "label", label_kind="values")
    with pytest.raises(DataError, match=match):
        source.read(source.row_groups)


def test_string_label_error_names_the_field_and_the_fix(tmp_path: Path) -> None:
    uri = write(tmp_path / "t.parquet", ["a", "b"])
    with pytest.raises(DataError, match=r"set data.label to a numeric column"):
        read_split(uri, "features", "label", "values")


def test_ray_engine_decodes_values() -> None:
    """The Ray Data engine's decode step (a plain function, no Ray needed)."""
    table = pa.table({"features": [[1.0], [2.0]], "label": [0.5, 1.5]})
    batch = decode_batch(table, "features", "label", "t.parquet", "values")
    assert batch["labels"].dtype == np.float32 and batch["labels"].tolist() == [0.5, 1.5]
    with pytest.raises(DataError, match="integer class ids"):
        decode_batch(table, "features", "label", "t.parquet")


def test_a_task_without_labels_reads_data_without_a_label_column(tmp_path: Path) -> None:
    """A language model's targets are its next tokens: its Parquet needs no label column
    (a reconstruction task's features likewise); a classifier still does."""
    uri = str(tmp_path / "unlabelled.parquet")
    pq.write_table(pa.table({"features": [[1.0, 2.0], [3.0, 4.0]]}), uri)
    source = ParquetSource(uri, "features", "label", label_kind="none")
    inputs, labels = source.read(source.row_groups)
    assert inputs.shape == (2, 2) and labels.tolist() == [0, 0]
    assert source.num_classes == 1
    assert read_split(uri, "features", "label", "none").labels.tolist() == [0, 0]
    with pytest.raises(DataError, match="column label not found"):
        ParquetSource(uri, "features", "label")
