"""Tasks: what a model's output is trained against (loss, training step, metrics).

`catalog` is the torch-free table the spec checks; `get(name)` returns the
implementation (deepyard.tasks.base.Task), imported on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from deepyard.tasks.catalog import TASKS, TaskInfo, all_metrics, info, lower_is_better, names

if TYPE_CHECKING:
    from deepyard.tasks.base import Task

_LOADED: dict[str, Task] = {}


def get(name: str) -> Task:
    """The task's implementation (one instance per process)."""
    if name not in _LOADED:
        module, cls = info(name).implementation.split(":")
        _LOADED[name] = getattr(importlib.import_module(module), cls)(info(name))
    return _LOADED[name]


__all__ = ["TASKS", "TaskInfo", "all_metrics", "get", "info", "lower_is_better", "names"]
