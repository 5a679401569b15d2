"""Which checkpoints of a lineage to delete after a new one is published.

Kept: the newest `keep_last` published checkpoints, the best `k` by the keep_best
metric, and always the newest one. Deleted: every other published checkpoint, and
unpublished leftovers (a crashed attempt's half-written save) older than the newest.
"""

from __future__ import annotations

from dataclasses import dataclass

from deepyard.checkpoint.manifest import Checkpoint
from deepyard.spec import CheckpointSpec


@dataclass(frozen=True)
class RetentionPolicy:
    keep_last: int
    best_metric: str | None = None
    best_mode: str = "min"
    best_k: int = 0

    @classmethod
    def from_spec(cls, spec: CheckpointSpec) -> RetentionPolicy:
        best = spec.keep_best
        if best is None:
            return cls(spec.keep_last)
        return cls(spec.keep_last, best.metric, best.mode, best.k)

    def decide(self, checkpoints: list[Checkpoint]) -> list[Checkpoint]:
        """The checkpoints to delete, oldest first."""
        published = sorted((c for c in checkpoints if c.published), key=lambda c: c.step)
        if not published:
            return []
        keep = {c.step for c in published[-self.keep_last :]}
        keep |= {c.step for c in self._best(published)}
        newest = published[-1].step
        return sorted(
            (c for c in checkpoints if c.step not in keep and (c.published or c.step < newest)),
            key=lambda c: c.step,
        )

    def _best(self, published: list[Checkpoint]) -> list[Checkpoint]:
        if self.best_metric is None:
            return []
        metric = self.best_metric
        scored = [c for c in published if c.metric(metric) is not None]
        sign = 1.0 if self.best_mode == "min" else -1.0
        # Ties go to the newer checkpoint.
        scored.sort(key=lambda c: (sign * (c.metric(metric) or 0.0), -c.step))
        return scored[: self.best_k]
