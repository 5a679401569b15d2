"""Where a rank sits in the job's data x pipeline x tensor grid, as DeepSpeed lays it out.

The ranks of one pipeline (or one tensor-parallel group) hold one copy of the model
between them, so they must read the same rows: data is sharded by the data-parallel
coordinate, not by rank. DeepSpeed's pipeline topology puts the data axis fastest
(rank = stage x data + replica, `PipeDataParallelTopology`); a test checks this layout
against the engine's own grid.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Layout:
    data: int
    pipeline: int = 1
    tensor: int = 1

    @classmethod
    def of(cls, spec: Any) -> Layout:
        """The layout a job spec asks for."""
        par = spec.parallelism
        return cls(spec.data_parallel_size, par.pipeline, par.tensor)

    @property
    def world_size(self) -> int:
        return self.data * self.pipeline * self.tensor

    @property
    def model_parallel(self) -> bool:
        return self.pipeline * self.tensor > 1

    def stage(self, rank: int) -> int:
        """The pipeline stage this rank runs (0 without pipeline parallelism)."""
        return rank // (self.data * self.tensor)

    def replica(self, rank: int) -> int:
        """The data-parallel replica this rank belongs to: the shard of rows it reads."""
        return (rank // self.tensor) % self.data

    def dropout_seed(self, seed: int, rank: int) -> int:
        """This rank's seed for random draws while training (dropout): one per replica.
        A tensor-parallel group holds the residual stream whole on every rank; drawing
        different masks there would make the weights it holds whole drift apart with no
        error. Without model parallelism: seed + rank, as always."""
        return seed + self.replica(rank)

    def counts(self, rank: int) -> bool:
        """Whether this rank's rows count toward throughput: one rank per replica (the
        others read the same rows)."""
        return self.stage(rank) == 0 and rank % self.tensor == 0

    def describe(self) -> dict[str, int]:
        """As recorded in checkpoint manifests."""
        return {"data": self.data, "pipeline": self.pipeline, "tensor": self.tensor}
