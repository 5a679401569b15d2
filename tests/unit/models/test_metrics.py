"""Evaluation metrics agree with scikit-learn on the same predictions: macro and per-class
precision, recall and F1 (zero_division=0), the confusion matrix, binary and one-vs-rest
ROC-AUC."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
    precision_score,
    recall_score,
    roc_auc_score,
)

from deepyard.models.metrics import (
    classification_metrics,
    per_class_metrics,
    roc_auc,
    roc_auc_per_class,
)


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


@pytest.mark.parametrize("seed", range(3))
def test_per_class_agrees_with_sklearn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    y_true = rng.integers(0, 5, 300)
    y_pred = np.where(rng.random(300) < 0.5, y_true, rng.integers(0, 5, 300))
    y_pred[y_pred == 3] = 0  # class 3 never predicted: precision 0, as zero_division=0
    ours = per_class_metrics(confusion(y_true, y_pred, 5))
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=range(5), average=None, zero_division=0
    )
    assert ours["precision"] == pytest.approx(precision.tolist(), abs=1e-12)
    assert ours["recall"] == pytest.approx(recall.tolist(), abs=1e-12)
    assert ours["f1"] == pytest.approx(f1.tolist(), abs=1e-12)
    assert ours["support"] == support.tolist()
    assert all(isinstance(count, int) for count in ours["support"])
    assert ours["precision"][3] == 0.0
    np.testing.assert_array_equal(
        confusion(y_true, y_pred, 5).numpy(), confusion_matrix(y_true, y_pred, labels=range(5))
    )


def softmax_scores(rng: np.random.Generator, y_true: np.ndarray, classes: int) -> np.ndarray:
    """Class probabilities that lean towards the true class, rounded so some scores tie."""
    logits = rng.normal(size=(len(y_true), classes))
    logits[np.arange(len(y_true)), y_true] += 1.0
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    return np.round(probs, 2)


@pytest.mark.parametrize("seed", range(3))
def test_binary_roc_auc_agrees_with_sklearn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    y_true = rng.integers(0, 2, 400)
    scores = softmax_scores(rng, y_true, 2)
    assert roc_auc(scores, y_true) == pytest.approx(roc_auc_score(y_true, scores[:, 1]), abs=1e-12)
    assert 0.6 < roc_auc(scores, y_true) < 0.95  # informative, not perfect
    per_class = roc_auc_per_class(scores, y_true)
    assert per_class[1] == pytest.approx(roc_auc_score(y_true, scores[:, 1]), abs=1e-12)
    assert per_class[0] == pytest.approx(roc_auc_score(y_true == 0, scores[:, 0]), abs=1e-12)


@pytest.mark.parametrize("seed", range(3))
def test_one_vs_rest_roc_auc_agrees_with_sklearn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    y_true = rng.integers(0, 6, 500)
    logits = rng.normal(size=(500, 6))
    logits[np.arange(500), y_true] += 1.0
    scores = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)  # rows sum to 1 (sklearn)
    expected = roc_auc_score(y_true, scores, multi_class="ovr", average="macro")
    assert roc_auc(scores, y_true) == pytest.approx(expected, abs=1e-12)
    expected_each = roc_auc_score(y_true, scores, multi_class="ovr", average=None)
    assert roc_auc_per_class(scores, y_true) == pytest.approx(expected_each.tolist(), abs=1e-12)


def test_roc_auc_of_a_class_with_no_true_rows_is_undefined() -> None:
    y_true = np.array([0, 0, 1, 1, 0, 1])
    scores = np.array([[0.7, 0.2, 0.1]] * 3 + [[0.1, 0.3, 0.6]] * 3)
    per_class = roc_auc_per_class(scores, y_true)
    assert math.isnan(per_class[2])
    assert roc_auc(scores, y_true) == pytest.approx(np.mean(per_class[:2]))
    assert math.isnan(roc_auc(scores[:, :2], np.zeros(6, dtype=np.int64)))
