"""One rank's training batches from Parquet: windows read ahead in a background thread.

The producer thread reads the row groups of the next shuffle window, decodes them to
numpy (zero-copy where Arrow allows), permutes and slices batches into a bounded queue;
the training loop takes them with `next_batch()`, and the time it waits is counted in
`wait_s`. `state_dict()` counts only what the loop consumed, never what was prefetched.

A text source (deepyard.data.text) yields token ids instead: its reader thread tokenizes
each window, and each batch is padded to its own longest row with the tokenizer's pad id,
so inputs are (B, L) int64 with L <= max_length and the mask is `inputs != pad_id`.
"""

from __future__ import annotations

import atexit
import queue
import threading
import time
import weakref
from collections.abc import Generator, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np
import torch

from deepyard.data import order
from deepyard.data.source import ParquetSource
from deepyard.data.text import pad_batch

_LIVE: weakref.WeakSet[ParquetLoader] = weakref.WeakSet()


def _close_live_loaders() -> None:
    """At interpreter exit, stop readers before threads are joined: a reader killed inside
    Arrow's C++ aborts the process ("terminate called without an active exception")."""
    for loader in list(_LIVE):
        loader.close()


# Runs where concurrent.futures registers its own shutdown: before threads are joined.
getattr(threading, "_register_atexit", atexit.register)(_close_live_loaders)


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
        # Batches of a fresh epoch for this rank (a resumed epoch may have fewer left).
        self.batches_per_epoch = order.batches_per_rank(
            source.uri, source.num_rows, world_size, batch_size
        )
        self.input_shape = source.input_shape  # read now, not in the reader threads
        self.pad_id = source.pad_id  # text sources: pad each batch's ids with this
        self.epoch = 0
        self.ranges = self._fresh_ranges()
        self.consumed = 0  # rows of self.ranges handed to the training loop
        self.wait_s = 0.0  # time next_batch() spent waiting for the producer
        self._queue: queue.Queue[Any] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

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
        _LIVE.add(self)

    def _produce(
        self, start: tuple[int, order.Ranges, int], out: queue.Queue[Any], stop: threading.Event
    ) -> None:
        epoch, ranges, consumed = start
        try:
            while not stop.is_set():
                batches = self._epoch_batches(epoch, order.skip(ranges, consumed))
                try:
                    for batch in batches:
                        if not _put(out, batch, stop):
                            return
                finally:
                    batches.close()  # on stop: also joins the reader thread
                epoch, ranges, consumed = epoch + 1, self._fresh_ranges(), 0
        except BaseException as exc:  # handed to the training loop, raised there
            out.put(exc)

    def _epoch_batches(
        self, epoch: int, ranges: order.Ranges
    ) -> Generator[tuple[torch.Tensor, torch.Tensor], None, None]:
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
        """Emit every whole batch from the pending chunks; keep the remainder pending.

        A batch inside one chunk is a view; only a batch that straddles two chunks is
        copied, so each row is copied once (by the window permutation), not twice."""
        bs = self.batch_size
        while sum(len(y) for y in ys) >= bs:
            if len(ys[0]) >= bs:
                x, y = xs[0][:bs], ys[0][:bs]
                xs[0], ys[0] = xs[0][bs:], ys[0][bs:]
            else:
                parts_x, parts_y, need = [], [], bs
                while need:
                    take = min(need, len(ys[0]))
                    parts_x.append(xs[0][:take])
                    parts_y.append(ys[0][:take])
                    xs[0], ys[0], need = xs[0][take:], ys[0][take:], need - take
                    if not len(ys[0]):
                        del xs[0], ys[0]
                x, y = np.concatenate(parts_x), np.concatenate(parts_y)
            if xs and not len(ys[0]):
                del xs[0], ys[0]
            inputs = self._inputs(x)
            labels = torch.from_numpy(y)
            if self.pin_memory:
                inputs, labels = inputs.pin_memory(), labels.pin_memory()
            yield inputs, labels

    def _inputs(self, rows: np.ndarray) -> torch.Tensor:
        if self.pad_id is not None:  # token ids of different lengths
            return pad_batch(list(rows), self.pad_id)[0]
        return torch.from_numpy(rows).reshape(-1, *self.input_shape)


def _put(out: queue.Queue[Any], item: Any, stop: threading.Event) -> bool:
    """Put `item`, waiting for room; False once `stop` is set."""
    while not stop.is_set():
        try:
            out.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False


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
