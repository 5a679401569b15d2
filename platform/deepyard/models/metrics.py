"""Evaluation metrics from a confusion matrix that was summed over all ranks.

Rows are true classes, columns predictions. Macro averages follow scikit-learn with
`zero_division=0`: a class never predicted has precision 0.
"""

from __future__ import annotations

import torch


def classification_metrics(confusion: torch.Tensor) -> dict[str, float]:
    cm = confusion.to(torch.float64)
    total = cm.sum()
    tp = cm.diag()
    predicted, actual = cm.sum(0), cm.sum(1)
    precision = torch.where(predicted > 0, tp / predicted.clamp(min=1), torch.zeros_like(tp))
    recall = torch.where(actual > 0, tp / actual.clamp(min=1), torch.zeros_like(tp))
    denom = precision + recall
    f1 = torch.where(
        denom > 0, 2 * precision * recall / denom.clamp(min=1e-12), torch.zeros_like(tp)
    )
    present = (actual > 0) | (predicted > 0)  # as scikit-learn: classes in y_true or y_pred
    return {
        "accuracy": float(tp.sum() / total) if total > 0 else 0.0,
        "precision_macro": float(precision[present].mean()) if present.any() else 0.0,
        "recall_macro": float(recall[present].mean()) if present.any() else 0.0,
        "f1_macro": float(f1[present].mean()) if present.any() else 0.0,
    }
