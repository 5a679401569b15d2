"""What a model is trained to do: its loss, its training step and its evaluation.

A task turns the loop's batches (inputs, labels) into a loss, and the eval split into
metrics. The model registry names each model's task (`ModelEntry.task`), so the loop
never asks what kind of model it runs. Most tasks only define `loss`, `eval_batch` and
`finish`; a task with several networks or optimizers (a GAN) overrides `build_engine`
and `train_step` too.

Evaluation is split in three so that it is exact across ranks: `eval_batch` returns
per-batch sums (added over batches and ranks) and per-row tensors (gathered from every
rank, for metrics that need all rows, like ROC-AUC); `finish` turns them into metrics.
`evaluate` owns the loop over the split, on data- and model-parallel engines alike
(train.evaluate.run_eval); a task changes only what differs: `scoring` (who scores which
rows, e.g. a regression against its split's own baseline, a GAN against fixed noise) and
`images` (the pictures an evaluation shows).

Token batches are padded per batch: for them `loss` and `eval_batch` also get the
batch's `pad_id` (a keyword), so a task whose targets are tokens can mask the padding.
Feature batches never pass it, so a task that only reads features need not take it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from deepyard.data import TensorData
from deepyard.tasks.catalog import TaskInfo
from deepyard.train.evaluate import Evaluation, pad_argument, run_eval


@dataclass(frozen=True)
class StepResult:
    loss: float  # mean over the micro-batches
    tokens: int  # token inputs this rank trained on (0 for features)
    forward_s: float  # this rank's forward passes: no collectives under ZeRO 0-2
    extra: dict[str, float] = field(default_factory=dict)  # e.g. a GAN's two losses


@dataclass(frozen=True)
class EvalBatch:
    """One eval batch's contribution: `sums` are added over batches and ranks, `rows` are
    concatenated over batches and gathered from all ranks (only the unmasked rows)."""

    sums: dict[str, torch.Tensor]
    rows: dict[str, torch.Tensor] = field(default_factory=dict)


@dataclass(frozen=True)
class Scoring:
    """How one evaluation scores the split: `task`'s `eval_batch` and `finish` over the
    rows of `data`, and `metrics` known before any row is scored."""

    task: Task
    data: TensorData
    metrics: dict[str, float] = field(default_factory=dict)


class Task:
    """Base task: the loop's default training step over one DeepSpeed engine. `info` is
    its catalogue entry (name, label kind, metrics)."""

    def __init__(self, info: TaskInfo) -> None:
        self.info = info

    def prepare(self, spec: Any) -> None:
        """Called with the job's spec before training or evaluating (in a worker, and in
        `deepyard eval`); a task that needs the job's settings keeps what it needs."""

    def loss(
        self,
        outputs: torch.Tensor,
        inputs: torch.Tensor,
        labels: torch.Tensor,
        pad_id: int | None = None,
    ) -> Any:
        raise NotImplementedError

    def eval_batch(
        self,
        outputs: torch.Tensor,
        inputs: torch.Tensor,
        labels: torch.Tensor,
        mask: Any,
        pad_id: int | None = None,
    ) -> EvalBatch:
        raise NotImplementedError

    def finish(
        self, sums: dict[str, torch.Tensor], rows: dict[str, torch.Tensor], data: TensorData
    ) -> Evaluation:
        raise NotImplementedError

    def build_engine(
        self, spec: Any, model: torch.nn.Module, total_steps: int, load_universal: bool
    ) -> Any:
        from deepyard.train.engine import build_engine

        return build_engine(spec, model, total_steps, load_universal=load_universal)

    def train_step(
        self,
        engine: Any,
        next_batch: Callable[[], tuple[torch.Tensor, torch.Tensor]],
        accumulation: int,
        device: torch.device,
        dtype: torch.dtype,
        pad_id: int | None = None,
    ) -> StepResult:
        """One optimizer step over `accumulation` micro-batches."""
        from deepyard.train import pipeline

        if pipeline.is_pipeline(engine):  # DeepSpeed runs the micro-batches through stages
            return pipeline.train_step(engine, next_batch, accumulation, device, dtype, pad_id)
        total, tokens, forward_s = 0.0, 0, 0.0
        for _ in range(accumulation):
            inputs, labels = next_batch()
            started = time.perf_counter()
            inputs, labels = to_device(inputs, device, dtype), labels.to(device)
            tokens += count_tokens(inputs, pad_id)
            loss = self.loss(engine(inputs), inputs, labels, **pad_argument(pad_id))
            forward_s += time.perf_counter() - started  # on GPU: launch time, a weaker proxy
            engine.backward(loss)
            engine.step()
            total += loss.item()
        return StepResult(total / accumulation, tokens, forward_s)

    def evaluate(
        self,
        engine: Any,
        data: TensorData,
        rank: int,
        world_size: int,
        batch_size: int,
        device: torch.device,
        dtype: torch.dtype,
    ) -> Evaluation:
        """The whole eval split, scored on every rank's rows (exact, not averaged), and
        the task's pictures (rank 0 keeps them)."""
        scoring = self.scoring(engine, data, device, dtype)
        result = run_eval(
            scoring.task, engine, scoring.data, rank, world_size, batch_size, device, dtype
        )
        images = self.images(engine, data, rank, device, dtype)
        metrics = {**result.metrics, **scoring.metrics}
        return Evaluation(metrics, result.classes, images if rank == 0 else {})

    def scoring(
        self, engine: Any, data: TensorData, device: torch.device, dtype: torch.dtype
    ) -> Scoring:
        """Who scores this evaluation, on which rows: by default this task, on the split."""
        return Scoring(self, data)

    def images(
        self, engine: Any, data: TensorData, rank: int, device: torch.device, dtype: torch.dtype
    ) -> dict[str, bytes]:
        """PNG pictures by folder name (none by default). Called on every rank after
        scoring: a forward under ZeRO-3 needs them all; only rank 0's are kept."""
        return {}


def count_tokens(inputs: torch.Tensor, pad_id: int | None) -> int:
    """Real tokens in a batch of token ids (padded per batch with pad_id); 0 for features."""
    if inputs.dtype != torch.long:
        return 0
    return int((inputs != pad_id).sum()) if pad_id is not None else inputs.numel()


def to_device(inputs: torch.Tensor, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Token ids stay integers; features take the training precision."""
    return inputs.to(device) if inputs.dtype == torch.long else inputs.to(device, dtype)
