"""Evaluation metrics from a confusion matrix agree with scikit-learn (macro, zero_division=0)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score

from deepyard.models.metrics import classification_metrics


def confusion(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> torch.Tensor:
    pairs = torch.from_numpy(y_true * num_classes + y_pred)
    return torch.bincount(pairs, minlength=num_classes**2).view(num_classes, num_classes)


def sklearn_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    macro = {"average": "macro", "zero_division": 0}
    return {
        "accuracy": accuracy_score(y_true, y_pred),
        "precision_macro": precision_score(y_true, y_pred, **macro),
        "recall_macro": recall_score(y_true, y_pred, **macro),
        "f1_macro": f1_score(y_true, y_pred, **macro),
    }


@pytest.mark.parametrize("seed", range(5))
def test_agrees_with_sklearn_on_random_predictions(seed: int) -> None:
    rng = np.random.default_rng(seed)
    classes = 6
    y_true = rng.integers(0, classes, 200)
    # Mostly right, so the metrics are far from chance and from each other.
    y_pred = np.where(rng.random(200) < 0.6, y_true, rng.integers(0, classes, 200))
    y_pred[y_pred == 2] = 1  # class 2 is never predicted
    y_true[y_true == 4] = 3  # class 4 is predicted but never true
    ours = classification_metrics(confusion(y_true, y_pred, classes))
    theirs = sklearn_metrics(y_true, y_pred)
    assert ours == pytest.approx(theirs, abs=1e-12)


def test_a_class_only_in_predictions_counts_like_sklearn() -> None:
    y_true = np.array([0, 0, 1, 1, 2])
    y_pred = np.array([0, 3, 1, 1, 2])
    ours = classification_metrics(confusion(y_true, y_pred, 4))
    assert ours == pytest.approx(sklearn_metrics(y_true, y_pred))
    assert ours["precision_macro"] == pytest.approx(0.75)


def test_classes_absent_everywhere_do_not_count() -> None:
    y_true = np.array([0, 1, 1, 0])
    y_pred = np.array([0, 1, 0, 0])
    ours = classification_metrics(confusion(y_true, y_pred, 10))
    assert ours == pytest.approx(sklearn_metrics(y_true, y_pred))


def test_perfect_and_empty() -> None:
    labels = np.array([0, 1, 2, 2, 1])
    assert classification_metrics(confusion(labels, labels, 3)) == {
        "accuracy": 1.0,
        "precision_macro": 1.0,
        "recall_macro": 1.0,
        "f1_macro": 1.0,
    }
    empty = classification_metrics(torch.zeros(3, 3, dtype=torch.int64))
    assert empty == {"accuracy": 0.0, "precision_macro": 0.0, "recall_macro": 0.0, "f1_macro": 0.0}
