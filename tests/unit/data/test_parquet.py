"""Parquet splits in and out: values and metadata survive; bad files raise a DataError
that names the file, the column and the fix."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from deepyard.data import read_split, resolve_sources
from deepyard.data.packaged import ensure_prepared, prepare
from deepyard.data.parquet import write_split
from deepyard.errors import DataError
from deepyard.spec import validate


@pytest.fixture
def split(tmp_path: Path) -> tuple[Path, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    inputs = rng.random((37, 1, 8, 8), dtype=np.float32)
    labels = rng.integers(0, 10, 37)
    path = tmp_path / "train.parquet"
    write_split(path, inputs, labels, num_classes=12)
    return path, inputs, labels


def write(path: Path, columns: dict, metadata: dict | None = None) -> str:
    table = pa.table(columns)
    if metadata:
        table = table.replace_schema_metadata(metadata)
    pq.write_table(table, path)
    return str(path)


def test_round_trip_keeps_values_shape_and_classes(split) -> None:
    path, inputs, labels = split
    data = read_split(str(path), "features", "label")
    assert len(data) == 37
    assert data.input_shape == (1, 8, 8)
    assert data.num_classes == 12  # from the metadata, not from the largest label
    assert data.inputs.dtype == torch.float32 and data.labels.dtype == torch.int64
    assert torch.equal(data.inputs, torch.from_numpy(inputs))
    assert torch.equal(data.labels, torch.from_numpy(labels))
    assert not list(path.parent.glob("*.tmp"))  # the atomic write left nothing behind


def test_a_directory_of_files_is_one_split(tmp_path: Path) -> None:
    folder = tmp_path / "parts"
    folder.mkdir()
    images = np.arange(5 * 4, dtype=np.float32).reshape(5, 2, 2)
    write_split(folder / "a.parquet", images[:3], np.array([0, 1, 2]), num_classes=3)
    write_split(folder / "b.parquet", images[3:], np.array([2, 1]), num_classes=3)
    data = read_split(str(folder), "features", "label")
    assert len(data) == 5
    assert data.input_shape == (2, 2)
    assert sorted(data.labels.tolist()) == [0, 1, 1, 2, 2]


def test_plain_columns_without_metadata(tmp_path: Path) -> None:
    uri = write(
        tmp_path / "t.parquet", {"x": [0.5, 1.5, 2.5], "y": pa.array([0, 3, 1], pa.int32())}
    )
    data = read_split(uri, "x", "y")
    assert data.input_shape == (1,)
    assert data.num_classes == 4  # largest label + 1
    assert data.inputs.view(-1).tolist() == [0.5, 1.5, 2.5]


def test_variable_lists_of_equal_length(tmp_path: Path) -> None:
    uri = write(tmp_path / "t.parquet", {"features": [[1.0, 2.0], [3.0, 4.0]], "label": [0, 1]})
    data = read_split(uri, "features", "label")
    assert data.inputs.tolist() == [[1.0, 2.0], [3.0, 4.0]]


@pytest.mark.parametrize(
    "features",
    [[[1.0, 2.0], [3.0], [4.0, 5.0, 6.0]], [[1.0, 2.0], [3.0, 4.0, 5.0]], [[1.0], None]],
    ids=["ragged-same-total", "ragged", "null-row"],
)
def test_ragged_feature_lists(tmp_path: Path, features: list) -> None:
    labels = list(range(len(features)))
    uri = write(tmp_path / "t.parquet", {"features": features, "label": labels})
    with pytest.raises(DataError, match=r"column 'features' has lists of different lengths"):
        read_split(uri, "features", "label")


def test_missing_column_lists_the_columns_there(split) -> None:
    path, _, _ = split
    with pytest.raises(DataError) as info:
        read_split(str(path), "pixels", "label")
    message = str(info.value)
    assert "column pixels not found" in message
    assert "the dataset has: features, label" in message
    assert "data.features / data.label" in message


@pytest.mark.parametrize(
    ("labels", "match"),
    [
        ([0.0, 1.0], r"label column 'label' has type double; labels must be integer class ids"),
        (["a", "b"], r"label column 'label' has type string"),
        ([0, -1], r"label column 'label' holds -1 at row 1, a negative class id"),
        (pa.array([0, None], pa.int64()), r"label column 'label' has 1 missing values"),
    ],
    ids=["float", "string", "negative", "null"],
)
def test_bad_labels(tmp_path: Path, labels, match: str) -> None:
    uri = write(tmp_path / "t.parquet", {"features": [1.0, 2.0], "label": labels})
    with pytest.raises(DataError, match=match) as info:
        read_split(uri, "features", "label")
    assert uri in str(info.value)


def test_labels_beyond_the_metadata_classes(tmp_path: Path) -> None:
    uri = tmp_path / "t.parquet"
    write_split(uri, np.zeros((3, 2), np.float32), np.array([0, 1, 5]), num_classes=3)
    with pytest.raises(
        DataError, match=r"holds 5 at row 2, outside the 3 classes 0\.\.2; use class ids 0\.\.2"
    ):
        read_split(str(uri), "features", "label")


def test_text_features_are_refused(tmp_path: Path) -> None:
    uri = write(tmp_path / "t.parquet", {"features": ["a", "b"], "label": [0, 1]})
    with pytest.raises(DataError, match=r"column 'features' has type string; features must be"):
        read_split(uri, "features", "label")


def test_file_without_rows(tmp_path: Path) -> None:
    features = pa.array([], pa.list_(pa.float32(), 4))
    uri = write(tmp_path / "t.parquet", {"features": features, "label": pa.array([], pa.int64())})
    with pytest.raises(DataError, match=r"has no rows; point data.train/data.eval"):
        read_split(uri, "features", "label")


def test_missing_path(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"does not exist; check the path or run `deepyard data"):
        read_split(str(tmp_path / "nope.parquet"), "features", "label")


@pytest.mark.parametrize("damage", ["empty", "truncated", "not-parquet"])
def test_damaged_files(split, damage: str) -> None:
    path, _, _ = split
    content = path.read_bytes()
    damaged = {"empty": b"", "truncated": content[: len(content) // 2], "not-parquet": b"a,b\n1,2"}
    path.write_bytes(damaged[damage])
    with pytest.raises(DataError) as info:
        read_split(str(path), "features", "label")
    assert str(path) in str(info.value)
    assert "Parquet" in str(info.value) or "corrupt" in str(info.value)


def test_corrupt_data_pages(split) -> None:
    """Footer intact, compressed pages overwritten: an error naming the file, not garbage."""
    path, _, _ = split
    content = bytearray(path.read_bytes())
    footer = int.from_bytes(content[-8:-4], "little") + 8
    content[4 : len(content) - footer] = bytes(len(content) - footer - 4)
    path.write_bytes(bytes(content))
    with pytest.raises(DataError, match=r"(?s)cannot read .*corrupt or truncated"):
        read_split(str(path), "features", "label")


# packaged datasets ---------------------------------------------------------------


def test_prepare_digits_and_reuse_the_cache(deepyard_cache: Path) -> None:
    train, test = ensure_prepared("digits")
    assert train.parent == deepyard_cache / "datasets" / "digits"
    train_data = read_split(str(train), "features", "label")
    test_data = read_split(str(test), "features", "label")
    assert (len(train_data), len(test_data)) == (1437, 360)
    assert train_data.input_shape == (1, 8, 8)
    assert train_data.num_classes == test_data.num_classes == 10
    assert float(train_data.inputs.min()) >= 0.0
    assert float(train_data.inputs.max()) <= 1.0
    written = train.stat().st_mtime_ns
    assert ensure_prepared("digits") == (train, test)
    assert train.stat().st_mtime_ns == written  # prepared once, then read from the cache


def test_resolve_sources(deepyard_cache: Path, base_spec_dict, tmp_path: Path) -> None:
    packaged = validate(base_spec_dict())
    train, test = resolve_sources(packaged.data)
    assert Path(train).is_file() and Path(test).is_file()
    assert Path(train).is_relative_to(deepyard_cache)
    paths = validate(base_spec_dict(data={"dataset": None, "train": "a.parquet"}))
    assert resolve_sources(paths.data) == ("a.parquet", None)


def test_prepare_unknown_dataset_lists_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"'nope' is not a packaged dataset; use one of: digits"):
        prepare("nope", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_write_split_metadata(tmp_path: Path) -> None:
    path = tmp_path / "t.parquet"
    write_split(path, np.zeros((2, 3, 4, 5), np.float32), np.array([0, 1]), num_classes=7)
    meta = pq.read_schema(path).metadata
    assert json.loads(meta[b"deepyard.shape"]) == [3, 4, 5]
    assert meta[b"deepyard.num_classes"] == b"7"
