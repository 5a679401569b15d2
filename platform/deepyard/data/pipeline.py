"""One rank's training batches from Parquet: windows read ahead in a background thread.

The producer thread reads the row groups of the next shuffle window, decodes them to
numpy (zero-copy where Arrow allows), permutes and slices batches into a bounded queue;
the training loop takes them with `next_batch()`, and the time it waits is counted in
`wait_s`. `state_dict()` counts only what the loop consumed, never what was prefetched.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np
import torch

from deepyard.data import order
from deepyard.data.source import ParquetSource

_DONE = object()


class ParquetLoader:
    """Training batches of one rank; an endless sequence of epochs."""

    def __init__(
        self,
        source: ParquetSource,
        rank: int,
        world_size: int,
        batch_size: int,
        *,
        seed: int = 0,
        shuffle: bool = True,
        buffer_rows: int = 16384,
        prefetch_batches: int = 8,
        pin_memory: bool = False,
    ) -> None:
        self.source = source
        self.rank, self.world_size, self.batch_size = rank, world_size, batch_size
        self.seed, self.shuffle, self.buffer_rows = seed, shuffle, buffer_rows
        self.prefetch_batches, self.pin_memory = prefetch_batches, pin_memory
        self.input_shape = source.input_shape  # read now, not in the reader threads
        self.epoch = 0
        self.ranges = self._fresh_ranges()
        self.consumed = 0  # rows of self.ranges handed to the training loop
        self.wait_s = 0.0  # time next_batch() spent waiting for the producer
        self._queue: queue.Queue[Any] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if self.batches_per_epoch == 0:
            raise ValueError(
                f"{source.uri} has {source.num_rows} rows, fewer than one batch of "
                f"{batch_size} for each of {world_size} workers; lower data.batch_size"
            )

    @property
    def batches_per_epoch(self) -> int:
        """Batches of a fresh epoch for this rank (a resumed epoch may have fewer left)."""
        return order.total(self._fresh_ranges()) // self.batch_size

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.consumed >= order.total(self.ranges):
            self.epoch, self.ranges, self.consumed = self.epoch + 1, self._fresh_ranges(), 0
        if self._thread is None:
            self._start()
        assert self._queue is not None
        started = time.perf_counter()
        item = self._queue.get()
        self.wait_s += time.perf_counter() - started
        if isinstance(item, BaseException):
            raise item
        self.consumed += self.batch_size
        return item

    def state_dict(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "seed": self.seed,
            "rank": self.rank,
            "world_size": self.world_size,
            "batch_size": self.batch_size,
            "num_rows": self.source.num_rows,
            "ranges": [list(r) for r in self.ranges],
            "consumed": self.consumed,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume at a cursor of this rank (use `order.reshard` for another world size)."""
        mine = (self.rank, self.world_size, self.batch_size, self.source.num_rows)
        theirs = (state["rank"], state["world_size"], state["batch_size"], state["num_rows"])
        if mine != theirs:
            raise ValueError(
                f"cursor of (rank, world, batch, rows)={theirs} does not fit this loader "
                f"{mine}; reshard the job's cursors with deepyard.data.order.reshard first"
            )
        self.close()
        self.epoch, self.seed, self.consumed = state["epoch"], state["seed"], state["consumed"]
        self.ranges = [(int(lo), int(hi)) for lo, hi in state["ranges"]]

    def close(self) -> None:
        """Stop the producer thread; the next next_batch() starts a fresh one."""
        if self._thread is not None:
            self._stop.set()
            assert self._queue is not None
            while self._thread.is_alive():
                try:
                    self._queue.get_nowait()
                except queue.Empty:
                    self._thread.join(timeout=0.05)
            self._thread, self._queue = None, None
        self._stop = threading.Event()

    def _fresh_ranges(self) -> order.Ranges:
        return order.rank_ranges(self.source.num_rows, self.world_size, self.rank, self.batch_size)

    def _start(self) -> None:
        self._queue = queue.Queue(maxsize=self.prefetch_batches)
        start = (self.epoch, list(self.ranges), self.consumed)
        self._thread = threading.Thread(
            target=self._produce,
            args=(start, self._queue, self._stop),
            daemon=True,
            name=f"deepyard-loader-rank{self.rank}",
        )
        self._thread.start()

    def _produce(
        self, start: tuple[int, order.Ranges, int], out: queue.Queue[Any], stop: threading.Event
    ) -> None:
        epoch, ranges, consumed = start
        try:
            while not stop.is_set():
                for batch in self._epoch_batches(epoch, order.skip(ranges, consumed)):
                    while not stop.is_set():
                        try:
                            out.put(batch, timeout=0.1)
                            break
                        except queue.Full:
                            continue
                    if stop.is_set():
                        return
                epoch, ranges, consumed = epoch + 1, self._fresh_ranges(), 0
        except BaseException as exc:  # handed to the training loop, raised there
            out.put(exc)

    def _epoch_batches(
        self, epoch: int, ranges: order.Ranges
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        sizes = [g.num_rows for g in self.source.row_groups]
        windows = order.epoch_windows(sizes, self.seed, epoch, self.shuffle, self.buffer_rows)
        segments = [  # (window index, first and last position of the range inside it)
            (index, max(lo, w.start), min(hi, w.start + w.num_rows))
            for lo, hi in ranges
            for index, w in enumerate(windows)
            if max(lo, w.start) < min(hi, w.start + w.num_rows)
        ]
        pending_x: list[np.ndarray] = []
        pending_y: list[np.ndarray] = []
        # One reader thread decodes the next window while this one permutes and batches.
        with ThreadPoolExecutor(1, thread_name_prefix="deepyard-read") as reader:
            reads = WindowReads(self, windows, epoch, [seg[0] for seg in segments], reader)
            for index, a, b in segments:
                inputs, labels = reads.get(index)
                start = windows[index].start
                pending_x.append(inputs[a - start : b - start])
                pending_y.append(labels[a - start : b - start])
                yield from self._full_batches(pending_x, pending_y)

    def _read_window(self, window: order.Window, index: int, epoch: int) -> tuple[Any, Any]:
        inputs, labels = self.source.read([self.source.row_groups[g] for g in window.groups])
        perm = order.window_order(window, index, self.seed, epoch, self.shuffle)
        return inputs[perm], labels[perm]

    def _full_batches(
        self, xs: list[np.ndarray], ys: list[np.ndarray]
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Emit every whole batch from the pending chunks; keep the remainder pending."""
        count = sum(len(y) for y in ys)
        if count < self.batch_size:
            return
        x, y = (np.concatenate(xs), np.concatenate(ys)) if len(xs) > 1 else (xs[0], ys[0])
        whole = count // self.batch_size * self.batch_size
        shape = self.input_shape
        for lo in range(0, whole, self.batch_size):
            inputs = torch.from_numpy(x[lo : lo + self.batch_size]).reshape(-1, *shape)
            labels = torch.from_numpy(y[lo : lo + self.batch_size])
            if self.pin_memory:
                inputs, labels = inputs.pin_memory(), labels.pin_memory()
            yield inputs, labels
        xs[:] = [x[whole:]] if whole < count else []
        ys[:] = [y[whole:]] if whole < count else []


class WindowReads:
    """Decoded windows in the order an epoch's segments need them, one read ahead."""

    def __init__(
        self,
        loader: ParquetLoader,
        windows: list[order.Window],
        epoch: int,
        needed: list[int],
        pool: ThreadPoolExecutor,
    ) -> None:
        self.loader, self.windows, self.epoch, self.pool = loader, windows, epoch, pool
        self.needed = list(dict.fromkeys(needed))  # distinct, in first-use order
        self.futures: dict[int, Future[tuple[Any, Any]]] = {}

    def get(self, index: int) -> tuple[Any, Any]:
        self._submit(index)
        position = self.needed.index(index)
        if position + 1 < len(self.needed):
            self._submit(self.needed[position + 1])
        for old in [i for i in self.futures if i != index and self.needed.index(i) < position]:
            del self.futures[old]  # windows already batched: free their memory
        return self.futures[index].result()

    def _submit(self, index: int) -> None:
        if index not in self.futures:
            window = self.windows[index]
            self.futures[index] = self.pool.submit(
                self.loader._read_window, window, index, self.epoch
            )
