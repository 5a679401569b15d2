"""DeepSpeed's checkpoint I/O, redirected to deepyard's writer (imports DeepSpeed: load it
only where DeepSpeed is set up, after `train.dist.init_process_group`)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from deepspeed.runtime.checkpoint_engine.checkpoint_engine import CheckpointEngine


class SnapshotEngine(CheckpointEngine):  # type: ignore[misc]
    """DeepSpeed's checkpoint I/O, redirected: `save` snapshots, `take` hands them over.

    `copy=True` (async saves) copies every tensor into host buffers kept across saves,
    so training may change the originals at once; reusing the buffers is safe because
    a save starts only after the previous one is written, and it spares the allocation
    that dominated the blocking time. `copy=False` (sync saves) hands over the live
    state: training waits until it is written anyway.
    """

    def __init__(self, copy: bool = True) -> None:
        super().__init__()
        self.name = "deepyard-snapshot"
        self.copy = copy
        self.pending: list[tuple[str, Any]] = []
        self._buffers: dict[tuple[str, ...], torch.Tensor] = {}

    def create(self, info: Any) -> None:
        self.pending = []

    def save(self, state_dict: Any, path: str) -> None:
        state = self._to_host(state_dict, (Path(path).name,)) if self.copy else state_dict
        self.pending.append((path, state))

    def load(self, path: str, map_location: Any = None) -> Any:
        return torch.load(path, map_location=map_location, weights_only=False)

    def commit(self, info: Any) -> bool:
        return True

    def makedirs(self, path: str, exist_ok: bool = False) -> None:
        os.makedirs(path, exist_ok=True)

    def take(self) -> list[tuple[str, Any]]:
        out, self.pending = self.pending, []
        return out

    def _to_host(self, value: Any, where: tuple[str, ...]) -> Any:
        """A copy of `value` whose tensors live in host memory and no longer change."""
        if isinstance(value, torch.Tensor):
            return self._copy(value, where)
        if isinstance(value, dict):
            return type(value)((k, self._to_host(v, (*where, str(k)))) for k, v in value.items())
        if isinstance(value, (list, tuple)) and not hasattr(value, "_fields"):
            return type(value)(self._to_host(v, (*where, str(i))) for i, v in enumerate(value))
        return value

    def _copy(self, tensor: torch.Tensor, where: tuple[str, ...]) -> torch.Tensor:
        tensor = tensor.detach()
        buffer = self._buffers.get(where)
        if buffer is None or buffer.shape != tensor.shape or buffer.dtype != tensor.dtype:
            buffer = torch.empty_like(tensor, device="cpu")
            self._buffers[where] = buffer
        return buffer.copy_(tensor)
