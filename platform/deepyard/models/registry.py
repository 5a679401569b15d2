"""Registry of model builders by name. A job spec names a model; no `if name == ...` anywhere.

A builder takes the data's `input_shape` (without batch) and `num_classes`, plus the
job's `model.args`, and returns a torch module whose forward maps a batch to logits.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

Builder = Callable[..., nn.Module]
_FIXED = ("input_shape", "num_classes")


@dataclass(frozen=True)
class ModelEntry:
    name: str
    family: str
    builder: Builder
    summary: str
    example_job: str | None = None
    inputs: str = "features"  # what forward() takes: "features" (float) or "tokens" (ids)

    def arg_names(self) -> list[str]:
        params = inspect.signature(self.builder).parameters
        return [p for p in params if p not in _FIXED]


_REGISTRY: dict[str, ModelEntry] = {}


def register(
    name: str,
    *,
    family: str,
    summary: str,
    example_job: str | None = None,
    inputs: str = "features",
) -> Callable[[Builder], Builder]:
    """Decorator: register `builder` under `name`; a second registration is an error."""

    def wrap(builder: Builder) -> Builder:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is registered twice")
        _REGISTRY[name] = ModelEntry(name, family, builder, summary, example_job, inputs)
        return builder

    return wrap


def names() -> list[str]:
    return sorted(_REGISTRY)


def get(name: str) -> ModelEntry:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(
            f"model.name={name!r} is not a registered model; use one of: {', '.join(names())}"
        ) from None


def check(name: str, args: dict[str, Any]) -> None:
    """Spec-time check: the name is registered and every argument is one its builder takes."""
    entry = get(name)
    valid = entry.arg_names()
    unknown = sorted(set(args) - set(valid))
    if unknown:
        raise ValueError(
            f"model.args has {', '.join(unknown)}, which model {name!r} does not take; "
            f"valid arguments: {', '.join(valid) or 'none'}"
        )


def build(
    name: str, args: dict[str, Any], input_shape: tuple[int, ...], num_classes: int
) -> nn.Module:
    entry = get(name)
    return entry.builder(input_shape=input_shape, num_classes=num_classes, **args)
