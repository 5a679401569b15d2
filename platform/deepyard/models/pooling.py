"""Pooling over token positions that ignores padding (rows end in pad ids)."""

from __future__ import annotations

import torch


def masked_mean(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over the positions where `mask` (B, L) is true; hidden is (B, L, D)."""
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1.0)


def masked_max(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Max over the positions where `mask` is true (0 for a row with none)."""
    filled = hidden.masked_fill(~mask.unsqueeze(-1), torch.finfo(hidden.dtype).min)
    return torch.where(mask.any(1, keepdim=True), filled.amax(1), torch.zeros_like(filled[:, 0]))
