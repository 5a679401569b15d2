"""The worker's data step: eval is scored against the training data's classes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from deepyard.data.parquet import write_split
from deepyard.errors import DataError
from deepyard.spec import load_text
from deepyard.train.loop import Sources, _open_data

SPEC = """
name: t
model: {name: mlp}
data: {train: TRAIN, eval: EVAL, batch_size: 4}
training: {max_steps: 1}
"""


def _split(path: Path, labels: list[int], meta_classes: int | None) -> str:
    rng = np.random.default_rng(0)
    x = rng.random((len(labels), 3), dtype=np.float32)
    write_split(path, x, np.array(labels), meta_classes or max(labels) + 1)
    return str(path)


def test_eval_split_missing_a_class_uses_training_classes(tmp_path: Path) -> None:
    train = _split(tmp_path / "train.parquet", [0, 1, 2, 3, 4], None)
    evaluation = _split(tmp_path / "eval.parquet", [0, 1], None)  # metadata says 2 classes
    spec = load_text(SPEC, "j.yaml", check_paths=False)
    source, eval_data = _open_data(spec, Sources(train, evaluation))
    assert source.num_classes == 5
    assert eval_data is not None and eval_data.num_classes == 5


def test_eval_label_outside_training_classes_is_a_data_error(tmp_path: Path) -> None:
    train = _split(tmp_path / "train.parquet", [0, 1, 2], None)
    evaluation = _split(tmp_path / "eval.parquet", [0, 7], None)
    spec = load_text(SPEC, "j.yaml", check_paths=False)
    with pytest.raises(DataError, match=r"holds 7 at row 1, outside the 3 classes 0\.\.2"):
        _open_data(spec, Sources(train, evaluation))
