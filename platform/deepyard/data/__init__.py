"""Data: Parquet (local or any pyarrow.fs URI) → per-rank shards → batches → tensors.

Data flow: spec.data → `resolve_sources()` on the driver (packaged datasets prepared into
the cache) → `read_split()` on every rank → `ShardedBatches` (train), `eval_batches` (eval).
"""

from __future__ import annotations

from deepyard.data.loader import ShardedBatches, eval_batches, shard_bounds
from deepyard.data.parquet import TensorData, read_split

__all__ = ["ShardedBatches", "TensorData", "eval_batches", "read_split", "shard_bounds"]


def resolve_sources(data_spec: object) -> tuple[str, str | None]:
    """(train URI, eval URI or None); a packaged dataset is prepared into the cache first."""
    from deepyard.data import packaged
    from deepyard.spec import DataSpec

    assert isinstance(data_spec, DataSpec)
    if data_spec.dataset is not None:
        train, test = packaged.ensure_prepared(data_spec.dataset)
        return str(train), str(test)
    assert data_spec.train is not None
    return data_spec.train, data_spec.eval
