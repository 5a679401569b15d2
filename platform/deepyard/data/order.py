"""The order of one epoch, computed from (seed, epoch) without reading the data.

An epoch is a sequence of *positions* 0..N-1. Row groups are shuffled as blocks, then
grouped into windows of at least `buffer_rows` rows, and rows are shuffled inside each
window: a reader needs one window in memory, never the dataset.

Ranks take contiguous ranges of positions, the same number of whole batches each; the
fewer than `world_size x batch_size` positions at the end are dropped for that epoch
(drop-last), so every rank runs the same number of steps. A cursor is the list of a
rank's ranges plus how many of their rows were consumed, so resuming, also on another
world size, continues with exactly the positions not yet trained on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

Ranges = list[tuple[int, int]]


@dataclass(frozen=True)
class Window:
    groups: tuple[int, ...]  # row-group indices, in reading order
    start: int  # first position of the window in the epoch
    num_rows: int


def epoch_windows(
    sizes: Sequence[int], seed: int, epoch: int, shuffle: bool, buffer_rows: int
) -> list[Window]:
    """Row groups (of `sizes` rows) in this epoch's order, cut into shuffle windows."""
    order = (
        np.random.default_rng([seed, epoch]).permutation(len(sizes))
        if shuffle
        else range(len(sizes))
    )
    windows: list[Window] = []
    groups: list[int] = []
    rows = start = 0
    for group in order:
        groups.append(int(group))
        rows += sizes[group]
        if rows >= buffer_rows:
            windows.append(Window(tuple(groups), start, rows))
            start, groups, rows = start + rows, [], 0
    if groups:
        windows.append(Window(tuple(groups), start, rows))
    return windows


def window_order(window: Window, index: int, seed: int, epoch: int, shuffle: bool) -> np.ndarray:
    """Row order inside window `index` of an epoch."""
    if not shuffle:
        return np.arange(window.num_rows)
    return np.random.default_rng([seed, epoch, index]).permutation(window.num_rows)


def batches_per_rank(uri: str, num_rows: int, world_size: int, batch_size: int) -> int:
    """Whole batches each rank gets in a fresh epoch (drop-last); at least one, or an error."""
    batches = num_rows // (world_size * batch_size)
    if batches == 0:
        raise ValueError(
            f"{uri} has {num_rows} rows, fewer than one batch of {batch_size} for each of "
            f"{world_size} workers; lower data.batch_size"
        )
    return batches


def rank_ranges(num_rows: int, world_size: int, rank: int, batch_size: int) -> Ranges:
    """A fresh epoch's positions for `rank`: equal whole batches, drop-last."""
    per_rank = num_rows // (world_size * batch_size) * batch_size
    return [(rank * per_rank, (rank + 1) * per_rank)]


def total(ranges: Ranges) -> int:
    return sum(hi - lo for lo, hi in ranges)


def skip(ranges: Ranges, count: int) -> Ranges:
    """`ranges` without their first `count` positions."""
    out: Ranges = []
    for lo, hi in ranges:
        take = min(count, hi - lo)
        count -= take
        if lo + take < hi:
            out.append((lo + take, hi))
    return out


def split(ranges: Ranges, parts: int, batch_size: int) -> list[Ranges]:
    """Cut `ranges` into `parts` contiguous pieces of equal whole batches (drop-last)."""
    per_part = total(ranges) // (parts * batch_size) * batch_size
    pieces: list[Ranges] = []
    rest = ranges
    for _ in range(parts):
        piece: Ranges = []
        need = per_part
        for lo, hi in rest:
            if need == 0:
                break
            take = min(need, hi - lo)
            piece.append((lo, lo + take))
            need -= take
        pieces.append(piece)
        rest = skip(rest, per_part)
    return pieces


def reshard(
    states: Sequence[dict[str, Any]], world_size: int, batch_size: int | None = None
) -> list[dict[str, Any]]:
    """Cursors of every old rank → cursors for `world_size` new ranks, in the same epoch.

    The new ranks share exactly the positions no old rank has consumed yet (less the
    drop-last remainder of fewer than world_size x batch_size positions). `batch_size`
    is the new per-rank batch (a fixed global batch over fewer ranks means larger ones).
    """
    first = states[0]
    if len({(s["epoch"], s["seed"], s["num_rows"], s["batch_size"]) for s in states}) != 1:
        raise ValueError("cursors of one job must agree on epoch, seed, rows and batch size")
    if sorted(s["rank"] for s in states) != list(range(first["world_size"])):
        raise ValueError(f"need the cursor of every one of the {first['world_size']} old ranks")
    remaining: Ranges = []
    for state in sorted(states, key=lambda s: s["rank"]):
        remaining += skip([tuple(r) for r in state["ranges"]], state["consumed"])
    batch = batch_size or first["batch_size"]
    pieces = split(remaining, world_size, batch)
    return [
        {
            **first,
            "rank": rank,
            "world_size": world_size,
            "batch_size": batch,
            "ranges": [list(r) for r in piece],
            "consumed": 0,
        }
        for rank, piece in enumerate(pieces)
    ]
