"""Causal language modelling: each position's logits predict the row's next token.

The targets are the inputs shifted by one (the label column is not read); targets that
are the batch's pad id are masked out of the loss and of every metric. Evaluation is
exact across ranks: each rank sums its tokens' negative log-likelihood, its token count
and its correct next-token guesses; the sums are added over ranks before dividing, so
the loss is the mean over all tokens, not a mean of the ranks' means.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from deepyard.data import TensorData
from deepyard.errors import DataError
from deepyard.tasks.base import EvalBatch, Task
from deepyard.train.evaluate import Evaluation


def next_token_targets(
    logits: torch.Tensor, ids: torch.Tensor, pad_id: int | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(logits (N, vocab), targets (N,), real (N,) bool) for the N = B x (L - 1)
    predictions of (B, L) rows: position t predicts token t + 1; `real` is False where
    that token is padding."""
    if logits.dim() != 3 or logits.shape[:2] != ids.shape:
        raise ValueError(
            f"language-modeling needs logits (batch, length, vocab) for ids {tuple(ids.shape)}, "
            f"got {tuple(logits.shape)}; use a causal language model (model.name: gpt)"
        )
    flat = logits[:, :-1].reshape(-1, logits.shape[-1]).float()
    targets = ids[:, 1:].reshape(-1)
    real = torch.ones_like(targets, dtype=torch.bool) if pad_id is None else targets != pad_id
    return flat, targets, real


class LanguageModeling(Task):
    def loss(
        self,
        outputs: torch.Tensor,
        inputs: torch.Tensor,
        labels: torch.Tensor,
        pad_id: int | None = None,
    ) -> Any:
        """Mean cross-entropy over this batch's real next tokens."""
        logits, targets, real = next_token_targets(outputs, inputs, pad_id)
        losses = F.cross_entropy(logits, targets, reduction="none")
        return (losses * real).sum() / real.sum().clamp(min=1)

    def eval_batch(
        self,
        outputs: torch.Tensor,
        inputs: torch.Tensor,
        labels: torch.Tensor,
        mask: Any,
        pad_id: int | None = None,
    ) -> EvalBatch:
        logits, targets, real = next_token_targets(outputs, inputs, pad_id)
        rows = mask.to(torch.bool)[:, None].expand(-1, inputs.shape[1] - 1).reshape(-1)
        counted = real & rows  # a real token of a row this rank scores
        nll = F.cross_entropy(logits, targets, reduction="none")
        correct = (logits.argmax(1) == targets) & counted
        return EvalBatch(
            {
                "nll": (nll.double() * counted).sum(),
                "tokens": counted.sum(),
                "correct": correct.sum(),
                "rows": mask.sum(),
            }
        )

    def finish(
        self, sums: dict[str, torch.Tensor], rows: dict[str, torch.Tensor], data: TensorData
    ) -> Evaluation:
        tokens = float(sums.get("tokens", torch.tensor(0.0)))
        if tokens == 0:
            raise DataError(
                "language-modeling: the eval split has no token to predict (every row is one "
                "token or padding); use rows of two tokens or more in data.eval"
            )
        loss = float(sums["nll"]) / tokens
        return Evaluation(
            {
                "loss": loss,
                "perplexity": math.exp(loss),
                "accuracy": float(sums["correct"]) / tokens,
                "num_tokens": tokens,
                "num_samples": float(sums["rows"]),
            }
        )
