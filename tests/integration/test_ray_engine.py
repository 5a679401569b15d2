"""The `ray` data engine on a real local Ray: shards, shuffle, resume, and a real job.

The dataset's features hold each row's index, so a batch tells exactly which rows a
rank saw. Rank 1 runs in a Ray task (its own process), as under `deepyard run`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from deepyard.data import engines
from deepyard.data.parquet import CLASSES_KEY, SHAPE_KEY
from deepyard.data.ray_engine import RayDataLoader, check_ray_ready
from deepyard.data.source import ParquetSource
from deepyard.errors import DataError
from deepyard.launch.local import run_job

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

NUM_ROWS, BATCH, WORLD = 1000, 64, 2
BATCHES = NUM_ROWS // (WORLD * BATCH)  # 7 per rank and epoch; 104 rows dropped


def write_rows(directory: Path) -> str:
    """Two files, row groups of 128; features (2, 2) all equal to the row index."""
    directory.mkdir()
    index = np.arange(NUM_ROWS)
    values = pa.array(np.repeat(index, 4).astype(np.float32))
    table = pa.table(
        {"features": pa.FixedSizeListArray.from_arrays(values, 4), "label": index % 3}
    ).replace_schema_metadata({SHAPE_KEY: json.dumps([2, 2]), CLASSES_KEY: "3"})
    pq.write_table(table.slice(0, 600), directory / "part-0.parquet", row_group_size=128)
    pq.write_table(table.slice(600), directory / "part-1.parquet", row_group_size=128)
    return str(directory)


def request(uri: str, rank: int, seed: int = 7) -> engines.LoaderRequest:
    return engines.LoaderRequest(
        ParquetSource(uri, "features", "label"),
        rank,
        WORLD,
        BATCH,
        seed=seed,
        shuffle=True,
        buffer_rows=256,
        prefetch_batches=2,
        pin_memory=False,
    )


def take(loader: engines.Loader, count: int) -> list[np.ndarray]:
    """Row indices of the next `count` batches (checking shapes and labels on the way)."""
    out = []
    for _ in range(count):
        inputs, labels = loader.next_batch()
        assert inputs.shape == (BATCH, 2, 2) and labels.shape == (BATCH,)
        rows = inputs[:, 0, 0].numpy().astype(np.int64)
        assert (labels.numpy() == rows % 3).all()
        out.append(rows)
    return out


@pytest.fixture(scope="module")
def dataset(ray_session: None, tmp_path_factory: pytest.TempPathFactory) -> str:
    return write_rows(tmp_path_factory.mktemp("ray-engine") / "rows")


@pytest.fixture(scope="module")
def two_epochs(dataset: str) -> list[np.ndarray]:
    """Rank 0's first two epochs, read without interruption."""
    loader = engines.build("ray", request(dataset, rank=0))
    assert isinstance(loader, RayDataLoader)
    assert loader.batches_per_epoch == BATCHES
    batches = take(loader, 2 * BATCHES)
    assert loader.epoch == 1
    assert loader.wait_s > 0
    loader.close()
    return batches


def test_ranks_get_disjoint_equal_shards(dataset: str, two_epochs: list[np.ndarray]) -> None:
    import ray

    def rank_one_epoch(uri: str) -> tuple[int, list[np.ndarray]]:
        loader = engines.build("ray", request(uri, rank=1))
        return loader.batches_per_epoch, take(loader, BATCHES)

    num_batches, rank1 = ray.get(ray.remote(rank_one_epoch).remote(dataset))
    rank0 = np.concatenate(two_epochs[:BATCHES])
    assert num_batches == BATCHES
    seen = np.concatenate([rank0, np.concatenate(rank1)])
    assert len(np.unique(rank0)) == len(rank0) == BATCHES * BATCH
    assert len(np.unique(seen)) == len(seen) == WORLD * BATCHES * BATCH  # disjoint
    assert NUM_ROWS - len(seen) < WORLD * BATCH  # all rows but the drop-last remainder
    assert seen.min() >= 0 and seen.max() < NUM_ROWS


def test_shuffle_differs_by_epoch_and_repeats_for_the_seed(
    dataset: str, two_epochs: list[np.ndarray]
) -> None:
    first, second = np.concatenate(two_epochs[:BATCHES]), np.concatenate(two_epochs[BATCHES:])
    assert not np.array_equal(first, second)
    assert set(first) != set(second)  # the shard's rows change too, not just their order
    assert not np.array_equal(first[:BATCH], np.sort(first[:BATCH]))  # rows are mixed

    other_seed = engines.build("ray", request(dataset, rank=0, seed=8))
    assert not np.array_equal(take(other_seed, 1)[0], two_epochs[0])
    other_seed.close()


def test_resume_continues_with_the_same_batches(dataset: str, two_epochs: list[np.ndarray]) -> None:
    interrupted = engines.build("ray", request(dataset, rank=0))
    head = take(interrupted, 3)  # same seed: the same first batches
    cursor = interrupted.state_dict()
    interrupted.close()
    assert cursor["epoch"] == 0 and cursor["consumed_batches"] == 3

    resumed = engines.build("ray", request(dataset, rank=0))
    resumed.load_state_dict(cursor)
    rest = take(resumed, BATCHES + 2 - 3)  # the rest of epoch 0, into epoch 1
    resumed.close()
    for got, want in zip(head + rest, two_epochs, strict=False):
        np.testing.assert_array_equal(got, want)
    assert resumed.state_dict()["epoch"] == 1


def test_resharding_only_at_an_epoch_boundary(dataset: str) -> None:
    loader = engines.build("ray", request(dataset, rank=0))
    cursor = {**loader.state_dict(), "world_size": 4, "epoch": 2}
    with pytest.raises(ValueError, match=r"resumes mid-epoch only .* epoch boundary"):
        loader.load_state_dict({**cursor, "consumed_batches": 1})
    loader.load_state_dict({**cursor, "consumed_batches": 0})  # a new epoch: any layout
    assert (loader.epoch, loader.state_dict()["consumed_batches"]) == (2, 0)


def test_without_ray_the_error_names_the_arrow_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    import ray

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    with pytest.raises(DataError, match=r"data\.engine=arrow"):
        check_ray_ready()


def test_a_job_trains_with_the_ray_engine(ray_session: None, digits_job: Any) -> None:
    """Real workers: 2 ranks, ~23 batches per epoch each, so the run crosses an epoch."""
    spec, sources = digits_job("data.engine=ray", "training.epochs=null", "training.max_steps=30")
    events: list[dict[str, Any]] = []
    summary = run_job(spec, sources, events.append, print)

    curve = [e["loss"] for e in events if e["type"] == "step"]
    assert len(curve) == 30
    assert np.mean(curve[-5:]) < 0.7 * np.mean(curve[:5]), curve
    assert summary["cursor"]["engine"] == "ray"
    assert summary["cursor"]["epoch"] == 1
