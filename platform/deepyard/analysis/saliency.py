"""Gradient x input attributions of one class's logit, for feature and token models.

Features (images): d logit_c / d x, times x, elementwise: same shape as the input. For a
linear model logit_c = w_c . x + b_c this is exactly w_c * x.

Tokens: token ids have no gradient, so the attribution is taken at the token embeddings
(the output of the model's embedding module) and summed over the embedding dimension:
one number per token. The embedding module is `model.embedding()` where the model
defines it, else the model's first `nn.Embedding` (in registration order: the word
embeddings in every built-in text model; position embeddings come later).

The class is the predicted one unless `target` is given.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from deepyard.errors import DataError


@dataclass(frozen=True)
class Attribution:
    values: torch.Tensor  # features: (N, *input_shape); tokens: (N, L)
    probs: torch.Tensor  # (N, classes) softmax of the logits
    targets: torch.Tensor  # (N,) the class each attribution is for


def _targets(logits: torch.Tensor, target: int | None) -> torch.Tensor:
    if target is None:
        return logits.argmax(1)
    if not 0 <= target < logits.shape[1]:
        raise DataError(
            f"--target {target}: the model has {logits.shape[1]} classes; "
            f"use 0..{logits.shape[1] - 1}"
        )
    return torch.full((logits.shape[0],), target, dtype=torch.long, device=logits.device)


def _backward(logits: torch.Tensor, target: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    if logits.dim() != 2:
        raise DataError(
            f"explain: the model returned shape {tuple(logits.shape)}; attributions need "
            "class logits (N, classes)"
        )
    targets = _targets(logits, target)
    # Rows are independent in eval mode: each row's gradient is that of its own logit.
    logits.gather(1, targets[:, None]).sum().backward()
    return logits.detach().float().softmax(1), targets


def features(model: nn.Module, inputs: torch.Tensor, target: int | None = None) -> Attribution:
    """Gradient x input of the target logit with respect to each input value."""
    model.eval()
    x = inputs.detach().clone().requires_grad_(True)
    with _frozen(model):
        probs, targets = _backward(model(x), target)
    assert x.grad is not None
    return Attribution((x.grad * x).detach(), probs, targets)


def embedding_module(model: nn.Module) -> nn.Module:
    """The module whose output is the per-token embeddings (see the module docstring)."""
    custom = getattr(model, "embedding", None)
    if callable(custom):
        found = custom()
        if isinstance(found, nn.Module):
            return found
    for module in model.modules():
        if isinstance(module, nn.Embedding):
            return module
    raise DataError(
        f"explain: {type(model).__name__} has no nn.Embedding to attribute tokens at; "
        "define embedding() -> nn.Module on the model, returning its token embedding layer"
    )


def tokens(model: nn.Module, ids: torch.Tensor, target: int | None = None) -> Attribution:
    """Gradient x input at the token embeddings, summed over the embedding dimension."""
    model.eval()
    captured: list[torch.Tensor] = []

    def hook(module: nn.Module, args: Any, output: torch.Tensor) -> torch.Tensor:
        leaf = output.detach().requires_grad_(True)  # a leaf: frozen embeddings work too
        captured.append(leaf)
        return leaf

    handle = embedding_module(model).register_forward_hook(hook)
    try:
        with _frozen(model):
            logits = model(ids)
            if len(captured) != 1:
                raise DataError(
                    f"explain: the embedding module ran {len(captured)} times in one forward; "
                    "define embedding() on the model to name the token embedding layer"
                )
            probs, targets = _backward(logits, target)
    finally:
        handle.remove()
    embedded = captured[0]
    assert embedded.grad is not None
    return Attribution((embedded.grad * embedded).sum(-1).detach(), probs, targets)


class _frozen:
    """Parameters need no gradients for attributions: turn them off, then restore."""

    def __init__(self, model: nn.Module) -> None:
        self.params = [p for p in model.parameters() if p.requires_grad]

    def __enter__(self) -> None:
        for p in self.params:
            p.requires_grad_(False)

    def __exit__(self, *exc: object) -> None:
        for p in self.params:
            p.requires_grad_(True)
