"""Evaluation metrics over every rank's rows: a confusion matrix summed over ranks, and the
class scores gathered from all ranks (ROC-AUC ranks all scores together, so it cannot be
averaged per rank).

Rows of a confusion matrix are true classes, columns predictions. Macro averages follow
scikit-learn with `zero_division=0`: a class never predicted has precision 0. ROC-AUC
follows `sklearn.metrics.roc_auc_score`: with two classes the AUC of class 1's score, with
more the unweighted mean of one-vs-rest AUCs (`multi_class="ovr"`, `average="macro"`);
a class with no true rows (or no other rows) has no AUC and is left out of the mean.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch


def classification_metrics(confusion: torch.Tensor) -> dict[str, float]:
    """Accuracy and macro precision, recall and F1 over the classes present."""
    per_class = _per_class(confusion)
    precision, recall, f1 = per_class["precision"], per_class["recall"], per_class["f1"]
    cm = confusion.to(torch.float64)
    total = cm.sum()
    present = (cm.sum(1) > 0) | (cm.sum(0) > 0)  # as scikit-learn: in y_true or y_pred
    return {
        "accuracy": float(cm.diag().sum() / total) if total > 0 else 0.0,
        "precision_macro": float(precision[present].mean()) if present.any() else 0.0,
        "recall_macro": float(recall[present].mean()) if present.any() else 0.0,
        "f1_macro": float(f1[present].mean()) if present.any() else 0.0,
    }


def per_class_metrics(confusion: torch.Tensor) -> dict[str, list[Any]]:
    """Precision, recall, F1 and support (true rows) of each class, in class order, as
    scikit-learn's `precision_recall_fscore_support(average=None, zero_division=0)`."""
    out = {name: values.tolist() for name, values in _per_class(confusion).items()}
    out["support"] = confusion.sum(1).to(torch.int64).tolist()  # row counts: integers
    return out


def _per_class(confusion: torch.Tensor) -> dict[str, torch.Tensor]:
    cm = confusion.to(torch.float64)
    tp = cm.diag()
    predicted, actual = cm.sum(0), cm.sum(1)
    zero = torch.zeros_like(tp)
    precision = torch.where(predicted > 0, tp / predicted.clamp(min=1), zero)
    recall = torch.where(actual > 0, tp / actual.clamp(min=1), zero)
    denom = precision + recall
    f1 = torch.where(denom > 0, 2 * precision * recall / denom.clamp(min=1e-12), zero)
    return {"precision": precision, "recall": recall, "f1": f1, "support": actual}


def roc_auc_per_class(scores: np.ndarray, labels: np.ndarray) -> list[float]:
    """One-vs-rest ROC-AUC of each class (column of `scores`, shape (N, C)); NaN where a
    class has no true rows or no other rows."""
    return [_binary_auc(scores[:, c], labels == c) for c in range(scores.shape[1])]


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Binary: AUC of class 1's score. More classes: macro one-vs-rest AUC over the classes
    that have an AUC. NaN when none has (e.g. every label the same)."""
    if scores.shape[1] == 2:
        return _binary_auc(scores[:, 1], labels == 1)
    defined = [auc for auc in roc_auc_per_class(scores, labels) if not math.isnan(auc)]
    return float(np.mean(defined)) if defined else math.nan


def _binary_auc(score: np.ndarray, positive: np.ndarray) -> float:
    """Mann-Whitney U / (n_pos x n_neg), tied scores counted half (= trapezoidal ROC area)."""
    num_pos = int(positive.sum())
    num_neg = len(positive) - num_pos
    if num_pos == 0 or num_neg == 0:
        return math.nan
    ranks = _average_ranks(score.astype(np.float64))
    u = ranks[positive].sum() - num_pos * (num_pos + 1) / 2
    return float(u / (num_pos * num_neg))


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks; tied values share the mean of their ranks."""
    order = np.argsort(values, kind="mergesort")
    ordered = values[order]
    first = np.r_[True, ordered[1:] != ordered[:-1]]
    group = np.cumsum(first) - 1
    starts = np.flatnonzero(first)
    ends = np.r_[starts[1:], len(values)]
    ranks = np.empty(len(values), dtype=np.float64)
    ranks[order] = ((starts + 1 + ends) / 2)[group]
    return ranks
