"""Registry of data engines by name (`data.engine` in the spec): each builds one rank's
training-batch loader. Every loader offers the same interface as `ParquetLoader`:
`next_batch()`, `batches_per_epoch`, `epoch`, `wait_s`, `state_dict()`,
`load_state_dict()` and `close()`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from deepyard.data.pipeline import ParquetLoader
from deepyard.data.source import ParquetSource


class Loader(Protocol):
    epoch: int
    wait_s: float

    @property
    def batches_per_epoch(self) -> int: ...

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class LoaderRequest:
    """Everything an engine needs to build one rank's loader."""

    source: ParquetSource
    rank: int
    world_size: int
    batch_size: int
    seed: int
    shuffle: bool
    buffer_rows: int
    prefetch_batches: int
    pin_memory: bool


EngineBuilder = Callable[[LoaderRequest], Loader]
_ENGINES: dict[str, EngineBuilder] = {}


def register(name: str) -> Callable[[EngineBuilder], EngineBuilder]:
    def wrap(builder: EngineBuilder) -> EngineBuilder:
        if name in _ENGINES:
            raise ValueError(f"data engine {name!r} is registered twice")
        _ENGINES[name] = builder
        return builder

    return wrap


def names() -> list[str]:
    return sorted(_ENGINES)


def build(name: str, request: LoaderRequest) -> Loader:
    if name not in _ENGINES:
        raise ValueError(f"data.engine={name!r} is unknown; use one of: {', '.join(names())}")
    return _ENGINES[name](request)


@register("arrow")
def _arrow(request: LoaderRequest) -> Loader:
    """pyarrow in each worker: the default, fastest on one machine (docs/benchmarks.md)."""
    return ParquetLoader(
        request.source,
        request.rank,
        request.world_size,
        request.batch_size,
        seed=request.seed,
        shuffle=request.shuffle,
        buffer_rows=request.buffer_rows,
        prefetch_batches=request.prefetch_batches,
        pin_memory=request.pin_memory,
    )


from deepyard.data import ray_engine  # noqa: E402, F401  (registers "ray"; imports ray lazily)
