"""The `ray` data engine: one rank's training batches from a Ray Data pipeline.

Data flow, per epoch, in each rank's process: the source's Parquet files →
`ray.data.read_parquet` → `decode_batch` (map_batches: the place for preprocessing) →
`random_shuffle` seeded by (seed, epoch) → this rank's contiguous share of the shuffled
rows (drop-last: every rank gets the same number of whole batches) → `iter_batches` of
exactly `batch_size` → tensors shaped like `source.input_shape`.

Every rank runs the same deterministic pipeline (order preserved, blocks pinned to the
files, seeded shuffle), so ranks agree on the epoch's order without talking to each
other; each reads and shuffles the whole dataset and keeps its 1/world_size share.
A cursor is (epoch, batches consumed): resuming replays the epoch's order and skips
those batches. Resuming on another world size works only at an epoch boundary.

Needs a running Ray (`deepyard run`): under torchrun, without Ray, building this engine
raises DataError telling the user to pick `data.engine: arrow`.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Generator
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import torch

from deepyard.data import order
from deepyard.data.engines import Loader, LoaderRequest, register
from deepyard.data.labels import check_class_ids, training_classes_fix
from deepyard.data.parquet import features_to_numpy, labels_to_numpy
from deepyard.data.source import ParquetSource
from deepyard.errors import DataError
from deepyard.tasks.catalog import LabelKind

if TYPE_CHECKING:  # importing ray.data takes seconds: only when the engine is built
    from ray.data.dataset import Dataset, MaterializedDataset

Batches = Generator[tuple[torch.Tensor, torch.Tensor], None, None]
MAX_READ_BLOCKS = 1024  # read tasks: one per file up to this many (a function of the data)


def decode_batch(
    batch: pa.Table,
    features: str,
    label: str,
    uri: str,
    label_kind: LabelKind = "classes",
    num_classes: int | None = None,
) -> dict[str, np.ndarray]:
    """Parquet rows → {"inputs": (n, d) float32, "labels": (n,) int64 class ids below
    `num_classes` (when given), or float32 values for a model whose task reads values},
    one row per row.

    Runs in Ray Data tasks. User preprocessing goes here; it must keep one output row per
    input row, or the ranks' batch counts, computed from the source's row count, break.
    """
    labels = labels_to_numpy(batch.column(label), uri, label, label_kind)
    if num_classes is not None and label_kind == "classes":
        fix = training_classes_fix(uri, num_classes)
        check_class_ids(labels, num_classes, uri, label, fix, first_row=None)
    return {"inputs": features_to_numpy(batch.column(features), uri, features), "labels": labels}


def epoch_seed(seed: int, epoch: int) -> int:
    """The shuffle seed of one epoch; below 2**31 (Ray adds the block index to it)."""
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0]) % 2**31


class RayDataLoader:
    """Training batches of one rank from Ray Data; an endless sequence of epochs."""

    def __init__(
        self,
        source: ParquetSource,
        rank: int,
        world_size: int,
        batch_size: int,
        *,
        seed: int = 0,
        shuffle: bool = True,
        prefetch_batches: int = 8,
        pin_memory: bool = False,
    ) -> None:
        self.source = source
        self.rank, self.world_size, self.batch_size = rank, world_size, batch_size
        self.seed, self.shuffle = seed, shuffle
        self.prefetch_batches, self.pin_memory = prefetch_batches, pin_memory
        self.batches_per_epoch = order.batches_per_rank(
            source.uri, source.num_rows, world_size, batch_size
        )
        self.epoch = 0
        self.consumed = 0  # batches of this epoch handed to the training loop
        self.wait_s = 0.0  # time next_batch() spent waiting, the epoch's pipeline included
        self._batches: Batches | None = None

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.consumed >= self.batches_per_epoch:
            self.close()
            self.epoch, self.consumed = self.epoch + 1, 0
        started = time.perf_counter()
        if self._batches is None:
            self._batches = self._epoch_batches(self.epoch, self.consumed)
        try:
            batch = next(self._batches)
        except StopIteration:
            raise DataError(
                f"{self.source.uri}: epoch {self.epoch} ended after {self.consumed} of "
                f"{self.batches_per_epoch} batches; the preprocessing in decode_batch must "
                "keep one row per input row"
            ) from None
        finally:
            self.wait_s += time.perf_counter() - started
        self.consumed += 1
        return batch

    def state_dict(self) -> dict[str, Any]:
        return {
            "engine": "ray",
            "epoch": self.epoch,
            "consumed_batches": self.consumed,
            "seed": self.seed,
            "shuffle": self.shuffle,
            "rank": self.rank,
            "world_size": self.world_size,
            "batch_size": self.batch_size,
            "num_rows": self.source.num_rows,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume at a cursor: mid-epoch on the same layout, or at any epoch boundary.

        Mid-epoch the cursor must come from this engine and the same rank, world size,
        batch size, rows, seed and shuffle setting; at an epoch boundary (nothing of the
        epoch consumed) any cursor works, from another world size or the arrow engine too.
        """
        consumed = int(state.get("consumed_batches", state.get("consumed", 0)))
        if consumed:
            self._check_same_layout(state)
        self.close()
        self.epoch, self.seed, self.consumed = int(state["epoch"]), int(state["seed"]), consumed

    def close(self) -> None:
        """Drop the epoch's pipeline; the next next_batch() rebuilds it at the cursor."""
        if self._batches is not None:
            self._batches.close()
            self._batches = None

    def _check_same_layout(self, state: dict[str, Any]) -> None:
        keys = ("engine", "rank", "world_size", "batch_size", "num_rows", "seed", "shuffle")
        current = self.state_dict()
        mine, theirs = {k: current[k] for k in keys}, {k: state.get(k) for k in keys}
        if theirs != mine:
            raise ValueError(
                f"data.engine=ray resumes mid-epoch only on the layout that wrote the "
                f"cursor: cursor has {theirs}, this loader has {mine}; "
                "resume with the same workers and batch size, or from a checkpoint taken at "
                "an epoch boundary (or use data.engine=arrow, which reshards any cursor)"
            )

    def _epoch_batches(self, epoch: int, skip: int) -> Batches:
        shard = self._shard(epoch, skip)
        shape = self.source.input_shape
        batches = shard.iter_batches(
            batch_size=self.batch_size,
            batch_format="numpy",
            drop_last=True,
            prefetch_batches=self.prefetch_batches,
        )
        for batch in batches:
            with warnings.catch_warnings():  # zero-copy over read-only object-store memory
                warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
                inputs = torch.from_numpy(batch["inputs"]).reshape(-1, *shape)
                labels = torch.from_numpy(batch["labels"])
            if self.pin_memory:
                inputs, labels = inputs.pin_memory(), labels.pin_memory()
            yield inputs, labels

    def _shard(self, epoch: int, skip: int) -> MaterializedDataset:
        """This rank's rows of the epoch's order, less the first `skip` batches."""
        ds = read_decoded(self.source)
        if self.shuffle:
            ds = ds.random_shuffle(seed=epoch_seed(self.seed, epoch))
        rows = self.batches_per_epoch * self.batch_size
        start, end = self.rank * rows + skip * self.batch_size, (self.rank + 1) * rows
        return ds.split_at_indices([start, end])[1]


def read_decoded(source: ParquetSource) -> Dataset:
    """The source's rows, decoded, in the same order in every process that reads them."""
    import ray.data

    # One "Starting execution" line per rank and epoch would drown the job's own output.
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    files = sorted({group.path for group in source.row_groups})
    context = ray.data.DataContext.get_current()
    # Ray 2.60's default Parquet reader (datasource V2) starts 32 footer-reading actors on
    # every execution: ~10 s per epoch on a small machine, against ~0.6 s for V1.
    use_v2 = getattr(context, "use_datasource_v2", None)
    if use_v2 is not None:
        context.use_datasource_v2 = False
    try:
        ds = ray.data.read_parquet(
            files,
            filesystem=source.filesystem,
            override_num_blocks=min(len(files), MAX_READ_BLOCKS),
        )
    finally:
        if use_v2 is not None:
            context.use_datasource_v2 = use_v2
    ds.context.execution_options.preserve_order = True  # the dataset's own copy
    ds.context.enable_progress_bars = False
    return ds.select_columns([source.features, source.label]).map_batches(
        decode_batch,  # type: ignore[arg-type]  # its extra arguments come from fn_kwargs
        batch_format="pyarrow",
        fn_kwargs={
            "features": source.features,
            "label": source.label,
            "uri": source.uri,
            "label_kind": source.label_kind,
            "num_classes": source.num_classes,
        },
    )


def check_ray_ready() -> None:
    """Ray is initialized and has a CPU for Ray Data beside the training workers."""
    import ray

    if not ray.is_initialized():
        raise DataError(
            "data.engine=ray needs a Ray cluster, and this worker runs without Ray "
            "(torchrun?); run the job with `deepyard run`, or set data.engine=arrow"
        )
    total = ray.cluster_resources().get("CPU", 0.0)
    group = ray.util.get_current_placement_group()
    reserved = sum(b.get("CPU", 0.0) for b in group.bundle_specs) if group else 0.0
    if total - reserved < 1:
        # Ray Data would wait for a free CPU forever, silently.
        raise DataError(
            f"data.engine=ray runs Ray Data tasks beside the training workers, but the "
            f"workers reserve all {total:g} CPUs of the Ray cluster; start Ray with more "
            "CPUs (`ray start --num-cpus`), lower resources.cpus_per_worker, or set "
            "data.engine=arrow"
        )


@register("ray")
def _ray(request: LoaderRequest) -> Loader:
    """Ray Data in each worker: for preprocessing that runs as Ray tasks on the cluster."""
    check_ray_ready()
    return RayDataLoader(
        request.source,
        request.rank,
        request.world_size,
        request.batch_size,
        seed=request.seed,
        shuffle=request.shuffle,
        prefetch_batches=request.prefetch_batches,
        pin_memory=request.pin_memory,
    )
