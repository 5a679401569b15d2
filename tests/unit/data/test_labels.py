"""One class-range check for every path that reads class ids: a label outside the
model's classes is refused with LabelOutOfRange, naming the file, the column, the row,
the value and the fix, in training (the row stream, Ray Data batches), in the worker's
eval split and in `deepyard eval` (tests/unit/analysis/test_eval_offline.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from deepyard.data import engines
from deepyard.data.labels import LabelOutOfRange, check_class_ids
from deepyard.data.parquet import read_split, write_split
from deepyard.data.ray_engine import decode_batch
from deepyard.data.source import ParquetSource
from deepyard.spec import load_text
from deepyard.train.loop import Sources, _open_data

SPEC = """
name: t
model: {name: mlp}
data: {train: TRAIN, eval: EVAL, batch_size: 4}
training: {max_steps: 1}
"""


def split(path: Path, labels: list[int], num_classes: int, row_group_size: int = 8192) -> str:
    """A split whose metadata says `num_classes`, whatever its labels hold."""
    rng = np.random.default_rng(0)
    write_split(path, rng.random((len(labels), 3), dtype=np.float32), np.array(labels), 3)
    table = pq.read_table(path)
    meta = {**(table.schema.metadata or {}), b"deepyard.num_classes": str(num_classes)}
    pq.write_table(table.replace_schema_metadata(meta), path, row_group_size=row_group_size)
    return str(path)


def test_the_error_names_file_column_row_value_and_fix() -> None:
    with pytest.raises(LabelOutOfRange) as info:
        check_class_ids(np.array([0, 2, 3, 1]), 3, "x.parquet", "digit", "use ids 0..2", 10)
    error = info.value
    assert (error.uri, error.column, error.row, error.value) == ("x.parquet", "digit", 12, 3)
    assert str(error) == (
        "x.parquet: label column 'digit' holds 3 at row 12, outside the 3 classes 0..2; "
        "use ids 0..2"
    )
    check_class_ids(np.array([0, 2, 1]), 3, "x.parquet", "digit", "unused")  # in range


def test_training_rows_beyond_the_metadata_classes_are_refused(tmp_path: Path) -> None:
    """Before: the row reached the loss and torch raised 'Target 5 is out of bounds'."""
    path = split(tmp_path / "train.parquet", [0, 1, 2, 0, 1, 5, 2, 0], 3, row_group_size=2)
    source = ParquetSource(path, "features", "label")
    assert source.num_classes == 3
    source.read(source.row_groups[:2])  # rows 0..3 are fine
    with pytest.raises(LabelOutOfRange) as info:
        source.read(source.row_groups[1:3])
    assert (info.value.uri, info.value.row, info.value.value) == (path, 5, 5)  # row in the file
    assert str(info.value).startswith(
        f"{path}: label column 'label' holds 5 at row 5, outside the 3 classes 0..2; "
        f"use class ids 0..2 in every file of the training data {path}"
    )


def test_the_training_loader_stops_on_the_first_bad_batch(tmp_path: Path) -> None:
    path = split(tmp_path / "train.parquet", [0, 1, 2, 7, 1, 0, 2, 1], 3)
    request = engines.LoaderRequest(
        ParquetSource(path, "features", "label"), 0, 1, 4, 0, False, 0, 1, False
    )
    loader = engines.build("arrow", request)
    try:
        with pytest.raises(LabelOutOfRange, match="holds 7 at row 3"):
            loader.next_batch()
    finally:
        loader.close()


def test_ray_data_batches_use_the_same_check(tmp_path: Path) -> None:
    table = pq.read_table(split(tmp_path / "t.parquet", [0, 4, 1], 3))
    with pytest.raises(LabelOutOfRange, match="label column 'label' holds 4, outside the 3"):
        decode_batch(table, "features", "label", "t.parquet", num_classes=3)
    assert decode_batch(table, "features", "label", "t.parquet")["labels"].tolist() == [0, 4, 1]


def test_a_split_beyond_its_own_metadata_and_a_negative_id(tmp_path: Path) -> None:
    beyond = split(tmp_path / "beyond.parquet", [0, 1, 5], 3)
    with pytest.raises(LabelOutOfRange, match=r"holds 5 at row 2.*deepyard\.num_classes"):
        read_split(beyond, "features", "label")
    negative = split(tmp_path / "negative.parquet", [0, -1, 1], 3)
    with pytest.raises(LabelOutOfRange, match="holds -1 at row 1, a negative class id"):
        read_split(negative, "features", "label")


def test_the_workers_eval_split_against_the_training_classes(tmp_path: Path) -> None:
    train = split(tmp_path / "train.parquet", [0, 1, 2], 3)
    evaluation = split(tmp_path / "eval.parquet", [0, 1, 7, 2], 8)
    spec = load_text(SPEC, "j.yaml", check_paths=False)
    with pytest.raises(LabelOutOfRange) as info:
        _open_data(spec, Sources(train, evaluation))
    assert (info.value.uri, info.value.row, info.value.value) == (evaluation, 2, 7)
    assert str(info.value) == (
        f"{evaluation}: label column 'label' holds 7 at row 2, outside the 3 classes 0..2; "
        f"the model has the classes of its training data {train}: relabel the split with "
        "those ids (0..2), or evaluate on data labelled like the training data"
    )
