"""Retention: what survives after each publish."""

from __future__ import annotations

from typing import Any

from deepyard.checkpoint.manifest import Checkpoint
from deepyard.checkpoint.retention import RetentionPolicy


def ckpt(step: int, published: bool = True, **metrics: float) -> Checkpoint:
    manifest: dict[str, Any] | None = {"metrics": metrics} if published else None
    return Checkpoint("L", step, manifest)


def steps(checkpoints: list[Checkpoint]) -> list[int]:
    return [c.step for c in checkpoints]


def test_keeps_the_newest_keep_last() -> None:
    every = [ckpt(s) for s in (10, 20, 30, 40)]
    assert steps(RetentionPolicy(keep_last=2).decide(every)) == [10, 20]


def test_keeps_the_best_by_metric_beside_the_newest() -> None:
    every = [ckpt(10, loss=0.5), ckpt(20, loss=0.2), ckpt(30, loss=0.4), ckpt(40, loss=0.6)]
    policy = RetentionPolicy(keep_last=1, best_metric="loss", best_mode="min", best_k=1)
    assert steps(policy.decide(every)) == [10, 30]
    policy = RetentionPolicy(keep_last=1, best_metric="loss", best_mode="max", best_k=2)
    assert steps(policy.decide(every)) == [20, 30]


def test_never_deletes_the_newest_even_without_its_metric() -> None:
    every = [ckpt(10, accuracy=0.9), ckpt(20)]
    policy = RetentionPolicy(keep_last=1, best_metric="accuracy", best_mode="max", best_k=1)
    assert steps(policy.decide(every)) == []


def test_half_written_leftovers_older_than_the_newest_go_newer_ones_stay() -> None:
    every = [ckpt(10), ckpt(15, published=False), ckpt(20), ckpt(25, published=False)]
    assert steps(RetentionPolicy(keep_last=5).decide(every)) == [15]


def test_nothing_published_means_nothing_deleted() -> None:
    assert RetentionPolicy(keep_last=1).decide([ckpt(5, published=False)]) == []
