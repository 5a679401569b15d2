"""Class ids against a model's classes: the one check that a label lies in [0, C).

Every path that reads class labels calls `check_class_ids`: the training stream
(`ParquetSource.read`, Ray Data batches), a split against its own metadata
(`read_labelled`), and an eval split against the model's classes (`fit_to_model`, used
alike by the worker before training and by `deepyard eval`). A label outside the range
raises `LabelOutOfRange`, which names the file, the column, the row, the value and the
fix, instead of an index error deep inside the loss.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import numpy as np
import torch

from deepyard.errors import DataError

if TYPE_CHECKING:  # parquet.py imports this module
    from deepyard.data.parquet import TensorData
    from deepyard.tasks.catalog import LabelKind


class LabelOutOfRange(DataError):
    """A class id outside [0, num_classes): where it is, what it is, and what to do."""

    def __init__(
        self,
        uri: str,
        column: str,
        row: int | None,
        value: int,
        num_classes: int | None,
        fix: str,
    ) -> None:
        self.uri, self.column, self.row, self.value = uri, column, row, value
        self.num_classes = num_classes
        where = f"label column {column!r} holds {value}" + ("" if row is None else f" at row {row}")
        if num_classes is None:
            bound = "a negative class id"
        else:
            bound = f"outside the {num_classes} classes 0..{num_classes - 1}"
        super().__init__(f"{uri}: {where}, {bound}; {fix}")


def check_class_ids(
    labels: np.ndarray | torch.Tensor,
    num_classes: int | None,
    uri: str,
    column: str,
    fix: str,
    first_row: int | None = 0,
) -> None:
    """Raise LabelOutOfRange for the first label outside [0, num_classes) (num_classes
    None: only negatives). `first_row` is the row number of labels[0] in `uri` (None
    where it is unknown)."""
    ids = labels.numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    bad = ids < 0 if num_classes is None else (ids < 0) | (ids >= num_classes)
    if not bad.any():
        return
    i = int(np.argmax(bad))
    row = None if first_row is None else first_row + i
    raise LabelOutOfRange(uri, column, row, int(ids[i]), num_classes, fix)


def class_ids_fix(num_classes: int | None) -> str:
    if num_classes is None:
        return "use class ids 0..C-1"
    return f"use class ids 0..{num_classes - 1}"


def training_classes_fix(uri: str, num_classes: int) -> str:
    """The fix for a training row whose class id the training data does not have."""
    return (
        f"{class_ids_fix(num_classes)} in every file of the training data {uri} (its "
        "metadata deepyard.num_classes sets the number of classes), or correct that metadata"
    )


def fit_to_model(
    data: TensorData,
    num_classes: int,
    label_kind: LabelKind,
    uri: str,
    column: str,
    trained_on: str,
) -> TensorData:
    """An eval split scored against the model's `num_classes` (not the ones that happen
    to occur in it); a class id the model does not have is refused. The worker (before
    training) and `deepyard eval` both call this, so both refuse with the same message."""
    if label_kind != "values":  # class ids ("none": read where present, e.g. a GAN's scorer)
        fix = (
            f"the model has the classes of its training data {trained_on}: relabel the "
            f"split with those ids (0..{num_classes - 1}), or evaluate on data labelled "
            "like the training data"
        )
        check_class_ids(data.labels, num_classes, uri, column, fix)
    return dataclasses.replace(data, num_classes=num_classes)
