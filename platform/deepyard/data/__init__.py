"""Data: Parquet (local or any pyarrow.fs URI) → per-rank shards → batches → tensors.

Data flow: spec.data → `resolve_sources()` on the driver (packaged datasets prepared into
the cache; a `data.window` series cut into windowed Parquet there too) → on every rank:
`ParquetSource` (row groups) → `ParquetLoader` (block shuffle, window shuffle, background
prefetch, exact cursor) for training; `read_split()` → `eval_batches` for evaluation.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from deepyard.data.loader import eval_batches
from deepyard.data.parquet import TensorData, read_split
from deepyard.data.pipeline import ParquetLoader
from deepyard.data.source import ParquetSource

if TYPE_CHECKING:  # deepyard.spec imports this package to check names: type-only here
    from tokenizers import Tokenizer

    from deepyard.spec import DataSpec
    from deepyard.tasks.catalog import LabelKind

__all__ = ["ParquetLoader", "ParquetSource", "TensorData", "eval_batches", "read_split"]


def resolve_sources(data_spec: DataSpec) -> tuple[str, str | None]:
    """(train URI, eval URI or None); a packaged dataset is prepared into the cache first,
    and a windowed series (data.window) is cut into windows there."""
    from deepyard.data import packaged

    if data_spec.window is not None:
        from deepyard.data import windows

        return windows.resolve(data_spec)

    if data_spec.dataset is not None:
        train, test = packaged.ensure_prepared(data_spec.dataset)
        return str(train), str(test)
    assert data_spec.train is not None
    return data_spec.train, data_spec.eval


def read_eval_split(
    data_spec: DataSpec, uri: str, tokenizer: Tokenizer | None, label_kind: LabelKind
) -> TensorData:
    """A whole split read the way the job reads its data: token ids of `data.text` with
    the job's tokenizer, else the `data.features` column; labels of the task's kind."""
    if tokenizer is not None and data_spec.text is not None:
        from deepyard.data.text import read_text_split

        return read_text_split(uri, data_spec.text, data_spec.label, tokenizer, label_kind)
    return read_split(uri, data_spec.features, data_spec.label, label_kind)
