"""Streaming training batches: disjoint complete shards over uneven row groups, a seeded
shuffle, exact resume (also in a new process and on another world size), bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from deepyard.data import ParquetLoader, ParquetSource, order
from deepyard.errors import DataError

ROWS = 1003
BATCH = 7


def write_rows(folder: Path, n: int = ROWS) -> Path:
    """n rows in two files with uneven row groups; each row's features hold its index."""
    folder.mkdir(parents=True, exist_ok=True)
    index = np.arange(n, dtype=np.float32)
    values = pa.array(np.repeat(index, 3))
    table = pa.table(
        {"features": pa.FixedSizeListArray.from_arrays(values, 3), "label": np.arange(n) % 5}
    )
    cut = n * 3 // 5
    write = {"write_page_checksum": True}
    pq.write_table(table.slice(0, cut), folder / "a.parquet", row_group_size=97, **write)
    pq.write_table(table.slice(cut), folder / "b.parquet", row_group_size=130, **write)
    return folder


@pytest.fixture
def source(tmp_path: Path) -> ParquetSource:
    return ParquetSource(str(write_rows(tmp_path / "data")), "features", "label")


def loader(source: ParquetSource, rank: int = 0, world: int = 1, **kw: object) -> ParquetLoader:
    return ParquetLoader(source, rank, world, BATCH, seed=3, buffer_rows=200, **kw)  # type: ignore[arg-type]


def take(batches: ParquetLoader, count: int) -> list[int]:
    """Row indices of the next `count` batches (inputs and labels must stay paired)."""
    out: list[int] = []
    for _ in range(count):
        inputs, labels = batches.next_batch()
        rows = inputs[:, 0].long()
        assert (rows % 5).tolist() == labels.tolist()
        out += rows.tolist()
    return out


@pytest.mark.parametrize("world", [1, 2, 3, 4])
def test_shards_are_disjoint_complete_and_equal(source: ParquetSource, world: int) -> None:
    per_rank = []
    for rank in range(world):
        batches = loader(source, rank, world)
        per_rank.append(take(batches, batches.batches_per_epoch))
        batches.close()
    seen = [row for rows in per_rank for row in rows]
    assert len(seen) == len(set(seen))  # disjoint
    assert ROWS - len(seen) < world * BATCH  # complete but for the drop-last remainder
    assert len({len(rows) for rows in per_rank}) == 1  # same steps on every rank


def test_one_big_file_splits_evenly(tmp_path: Path) -> None:
    table = pa.table({"features": np.arange(100, dtype=np.float32), "label": np.arange(100) % 5})
    pq.write_table(table, tmp_path / "one.parquet")  # a single row group
    big = ParquetSource(str(tmp_path / "one.parquet"), "features", "label")
    shards = [take(ParquetLoader(big, r, 2, 10), 5) for r in range(2)]
    assert sorted(shards[0] + shards[1]) == list(range(100))


def test_shuffle_differs_by_epoch_and_repeats_for_a_seed(source: ParquetSource) -> None:
    first = loader(source)
    epoch0, epoch1 = take(first, 143), take(first, 143)
    assert epoch0 != epoch1
    assert len(set(epoch0) ^ set(epoch1)) <= 2 * (ROWS - len(epoch0))  # drop-last differs
    assert take(loader(source), 143) == epoch0
    assert take(ParquetLoader(source, 0, 1, BATCH, shuffle=False), 3) == list(range(21))


def test_resume_in_a_new_process_continues_bit_for_bit(source: ParquetSource) -> None:
    uninterrupted = take(loader(source), 200)  # crosses an epoch boundary
    interrupted = loader(source)
    head = take(interrupted, 60)
    cursor = json.dumps(interrupted.state_dict())
    code = (
        "import json, sys; from deepyard.data import ParquetLoader, ParquetSource\n"
        f"s = ParquetSource({source.uri!r}, 'features', 'label')\n"
        f"b = ParquetLoader(s, 0, 1, {BATCH}, seed=3, buffer_rows=200)\n"
        "b.load_state_dict(json.loads(sys.stdin.read()))\n"
        "rows = [r for _ in range(140) for r in b.next_batch()[0][:, 0].long().tolist()]\n"
        "print(json.dumps(rows))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], input=cursor, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert head + json.loads(done.stdout) == uninterrupted


@pytest.mark.parametrize(("old", "new"), [(2, 1), (1, 2), (3, 2)])
def test_resharded_cursor_covers_exactly_the_rest_of_the_epoch(
    source: ParquetSource, old: int, new: int
) -> None:
    olds = [loader(source, rank, old) for rank in range(old)]
    consumed = [row for batches in olds for row in take(batches, 11)]
    states = [batches.state_dict() for batches in olds]
    rest: list[int] = []
    for state in order.reshard(states, new):
        batches = loader(source, state["rank"], new)
        batches.load_state_dict(state)
        rest += take(batches, order.total(batches.ranges) // BATCH)
        assert batches.epoch == 0
    remaining = order.total(order.skip(states[0]["ranges"], 0)) * old - len(consumed)
    assert len(set(consumed + rest)) == len(consumed) + len(rest)  # nothing twice
    assert remaining - len(rest) < new * BATCH  # nothing skipped but drop-last


def test_a_cursor_from_another_world_size_must_be_resharded(source: ParquetSource) -> None:
    state = loader(source, 0, 2).state_dict()
    with pytest.raises(ValueError, match="reshard"):
        loader(source, 0, 1).load_state_dict(state)


def test_data_wait_is_measured_and_close_stops_the_reader(source: ParquetSource) -> None:
    batches = loader(source)
    take(batches, 5)
    assert batches.wait_s > 0
    thread = batches._thread
    batches.close()
    assert thread is not None and not thread.is_alive()


def test_missing_column_names_the_columns(tmp_path: Path) -> None:
    folder = write_rows(tmp_path / "d")
    with pytest.raises(DataError, match="column pixels not found; the dataset has: features"):
        ParquetSource(str(folder), "pixels", "label")


def test_string_labels_are_refused_with_the_fix(tmp_path: Path) -> None:
    pq.write_table(pa.table({"features": [1.0, 2.0], "label": ["a", "b"]}), tmp_path / "s.parquet")
    source = ParquetSource(str(tmp_path / "s.parquet"), "features", "label")
    with pytest.raises(DataError, match="labels must be integer class ids"):
        take(ParquetLoader(source, 0, 1, 1), 1)


def test_empty_dataset_is_refused(tmp_path: Path) -> None:
    empty = pa.table({"features": pa.array([], pa.float32()), "label": pa.array([], pa.int64())})
    pq.write_table(empty, tmp_path / "e.parquet")
    with pytest.raises(DataError, match="has no rows"):
        ParquetSource(str(tmp_path / "e.parquet"), "features", "label")


def test_truncated_file_names_the_file(tmp_path: Path) -> None:
    folder = write_rows(tmp_path / "d")
    data = (folder / "b.parquet").read_bytes()
    (folder / "b.parquet").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"b\.parquet.*corrupt or truncated"):
        ParquetSource(str(folder), "features", "label")


def test_corrupt_row_group_fails_the_step_instead_of_training_on_it(tmp_path: Path) -> None:
    folder = write_rows(tmp_path / "d")
    path = folder / "a.parquet"
    data = bytearray(path.read_bytes())
    data[200:260] = b"\xff" * 60  # inside the first row group's pages; footer intact
    path.write_bytes(bytes(data))
    with pytest.raises(DataError, match=r"a\.parquet.*CRC"):
        source = ParquetSource(str(folder), "features", "label")
        take(ParquetLoader(source, 0, 1, BATCH, shuffle=False), 1)


def test_unreachable_uri_is_a_data_error_naming_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """An S3 endpoint that refuses connections (on loopback: no traffic leaves the machine)."""
    for name, value in {
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
    }.items():
        monkeypatch.setenv(name, value)  # static credentials: no instance-metadata lookup
    uri = "s3://bucket/data?endpoint_override=127.0.0.1:9&scheme=http&region=us-east-1"
    with pytest.raises(DataError, match=r"cannot open Parquet dataset s3://bucket/data.*reachable"):
        ParquetSource(uri, "features", "label")


def test_a_glob_selects_files(tmp_path: Path) -> None:
    folder = write_rows(tmp_path / "d")
    only_b = ParquetSource(str(folder / "b*.parquet"), "features", "label")
    assert only_b.num_rows == ROWS - ROWS * 3 // 5
    both = ParquetSource(f"file://{folder}/*.parquet", "features", "label")
    assert both.num_rows == ROWS
    with pytest.raises(DataError, match="matches no files"):
        ParquetSource(str(folder / "c*.parquet"), "features", "label")


def test_too_few_rows_for_one_batch_per_rank_names_the_fix(source: ParquetSource) -> None:
    with pytest.raises(ValueError, match=r"has 1003 rows, fewer than one batch of 300 for each"):
        ParquetLoader(source, 0, 4, 300)
