"""A checkpoint's model rebuilt outside training, and data read the way its job read it.

The manifest carries the resolved job spec (model name and arguments, the data's columns
and tokenizer) and, from this version on, what the model was built for (`model_data`:
input shape, classes, vocabulary). Older checkpoints get those from the job's training
data, exactly as training did. The weights are the consolidated fp32 state
(ZeRO partitions merged by DeepSpeed's zero_to_fp32), loaded strictly.
"""

from __future__ import annotations

import json
import os
import typing
from dataclasses import dataclass
from typing import Any

import pydantic
import torch
from pydantic_core import to_jsonable_python
from torch import nn

from deepyard import models, tasks
from deepyard.analysis.locate import Located
from deepyard.checkpoint.export import consolidated_state_dict
from deepyard.data import TensorData, packaged, read_eval_split
from deepyard.data.convert import LABEL_NAMES_KEY
from deepyard.data.labels import fit_to_model
from deepyard.data.parquet import open_dataset
from deepyard.errors import CheckpointError, DataError
from deepyard.spec import JobSpec
from deepyard.tasks.base import Task


@dataclass(frozen=True)
class ModelData:
    """What the model was built for (the training data's shape, classes and vocabulary)."""

    input_shape: tuple[int, ...]
    num_classes: int
    vocab: models.Vocab | None = None

    def to_json(self) -> dict[str, Any]:
        vocab = None if self.vocab is None else [self.vocab.size, self.vocab.pad_id]
        return {"input_shape": list(self.input_shape), "num_classes": self.num_classes,
                "vocab": vocab}  # fmt: skip

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> ModelData:
        vocab = raw.get("vocab")
        return cls(
            tuple(int(s) for s in raw["input_shape"]),
            int(raw["num_classes"]),
            None if vocab is None else models.Vocab(int(vocab[0]), int(vocab[1])),
        )


@dataclass
class Loaded:
    located: Located
    spec: JobSpec
    model_data: ModelData
    model: nn.Module  # on `device`, in eval mode, with the checkpoint's weights
    task: Task
    device: torch.device
    tokenizer: Any = None  # the job's tokenizer, for token models

    @property
    def step(self) -> int:
        return self.located.checkpoint.step

    @property
    def takes_tokens(self) -> bool:
        return models.get(self.spec.model.name).inputs == "tokens"


def pick_device(name: str) -> torch.device:
    if name not in ("cpu", "cuda") and not name.startswith("cuda:"):
        raise DataError(f"--device {name}: use cpu or cuda (cuda:N for another GPU)")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise DataError(f"--device {name}: no CUDA device is visible here; use --device cpu")
    return torch.device(name)


def load(located: Located, device: torch.device) -> Loaded:
    # DeepSpeed (consolidating ZeRO partitions) otherwise guesses, and says so on stdout.
    os.environ.setdefault("DS_ACCELERATOR", "cuda" if device.type == "cuda" else "cpu")
    spec = saved_spec(located)
    tokenizer = None
    if spec.data.tokenizer is not None:
        from deepyard.data.text import load_tokenizer

        tokenizer = load_tokenizer(spec.data.tokenizer)
    raw = located.manifest.get("model_data")
    model_data = ModelData.from_json(raw) if raw else _from_training_data(spec, tokenizer)
    model = models.build(
        spec.model.name,
        spec.model.args,
        model_data.input_shape,
        model_data.num_classes,
        model_data.vocab,
    )
    state = consolidated_state_dict(located.store, located.checkpoint)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[1:2] or [str(exc)]
        raise CheckpointError(
            f"CHECKPOINT {located.uri}: its weights do not fit model {spec.model.name!r} "
            f"with args {spec.model.args} ({first[0].strip()}); the model's code changed "
            "since it was saved, so evaluate it with the deepyard version that trained it"
        ) from None
    model.to(device).eval()
    task = tasks.get(spec.task_name)
    task.prepare(spec)
    return Loaded(located, spec, model_data, model, task, device, tokenizer)


def saved_spec(located: Located) -> JobSpec:
    raw = located.manifest.get("spec")
    if not isinstance(raw, dict):
        raise CheckpointError(
            f"CHECKPOINT {located.uri}: its manifest records no job spec, so the model "
            "cannot be rebuilt; it was saved by an older deepyard"
        )
    try:
        return JobSpec.model_validate(without_defaults(JobSpec, raw))
    except (pydantic.ValidationError, ValueError) as exc:
        raise CheckpointError(
            f"CHECKPOINT {located.uri}: its recorded job spec no longer validates ({exc}); "
            "evaluate it with the deepyard version that trained it"
        ) from None


def without_defaults(cls: type[pydantic.BaseModel], raw: dict[str, Any]) -> dict[str, Any]:
    """`raw` (a resolved spec: every field written out) less the fields that hold their
    default, so it validates as the user's spec did: some checks look at which fields
    were set (data.text with data.features, for one)."""
    out: dict[str, Any] = {}
    for name, value in raw.items():
        field = cls.model_fields.get(name)
        if field is None:
            out[name] = value
            continue
        nested = _model_type(field.annotation)
        if nested is not None and isinstance(value, dict):
            out[name] = without_defaults(nested, value)
        elif field.is_required() or value != to_jsonable_python(
            field.get_default(call_default_factory=True)
        ):
            out[name] = value
    return out


def _model_type(annotation: Any) -> type[pydantic.BaseModel] | None:
    """The model class of a field typed `Model` or `Model | None`."""
    for candidate in (annotation, *typing.get_args(annotation)):
        if isinstance(candidate, type) and issubclass(candidate, pydantic.BaseModel):
            return candidate
    return None


def _from_training_data(spec: JobSpec, tokenizer: Any) -> ModelData:
    """Shape, classes and vocabulary as training found them in its training split."""
    from deepyard.data import resolve_sources
    from deepyard.data.source import ParquetSource

    train_uri, _ = resolve_sources(spec.data)
    source = ParquetSource(
        train_uri,
        spec.data.features,
        spec.data.label,
        text=spec.data.text,
        tokenizer=tokenizer,
        label_kind=tasks.info(spec.task_name).labels,
    )
    vocab = None
    if source.tokenizer is not None and source.pad_id is not None:
        vocab = models.Vocab(source.tokenizer.get_vocab_size(), source.pad_id)
    return ModelData(tuple(source.input_shape), source.num_classes, vocab)


@dataclass(frozen=True)
class EvalData:
    data: TensorData
    uri: str  # where it was read from
    label_names: list[str] | None


def data_uri(spec: JobSpec, arg: str | None, option: str) -> str:
    """`--data`/`--inputs` as a Parquet URI: a packaged dataset's test split, a path, or
    (None) the job's own eval split."""
    if arg is None:
        from deepyard.data import resolve_sources

        _, eval_uri = resolve_sources(spec.data)
        if eval_uri is None:
            raise DataError(
                f"{option}: job {spec.name!r} has no eval data (data.eval is unset); pass "
                f"{option} PATH (Parquet) or a packaged dataset name"
            )
        return eval_uri
    if arg in packaged.PACKAGED:
        return str(packaged.ensure_prepared(arg)[1])
    return arg


def read_data(loaded: Loaded, arg: str | None, option: str = "--data") -> EvalData:
    """The data `arg` names, read with the job's columns and tokenizer, checked against
    the model's input shape and classes."""
    spec, want = loaded.spec, loaded.model_data
    uri = data_uri(spec, arg, option)
    try:
        data = read_eval_split(spec.data, uri, loaded.tokenizer, loaded.task.info.labels)
    except DataError as exc:
        raise DataError(f"{option} {arg or uri}: {exc}") from None
    if not loaded.takes_tokens and data.input_shape != want.input_shape:
        raise DataError(
            f"{option} {arg or uri}: its rows have shape {data.input_shape}, but the model "
            f"was trained on {want.input_shape}; pass data with that shape (the job's own "
            f"eval split fits: leave {option} out)"
        )
    trained_on = spec.data.dataset or spec.data.train or "data.train"
    labels = loaded.task.info.labels
    data = fit_to_model(data, want.num_classes, labels, uri, spec.data.label, trained_on)
    return EvalData(data, uri, _label_names(uri))


def _label_names(uri: str) -> list[str] | None:
    meta = open_dataset(uri).schema.metadata or {}
    if LABEL_NAMES_KEY not in meta:
        return None
    names = json.loads(meta[LABEL_NAMES_KEY])
    return [str(n) for n in names] if isinstance(names, list) else None
