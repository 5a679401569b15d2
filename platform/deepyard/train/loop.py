"""The worker's training loop: data → forward → backward → step → log → evaluate.

Runs the same under a Ray worker and under torchrun. Rank 0 emits events (phases,
steps, evaluations) through `emit`; whoever runs the loop decides where they go.
"""

from __future__ import annotations

import base64
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from deepyard import models, tasks
from deepyard.checkpoint import relayout
from deepyard.data import TensorData, engines, read_eval_split
from deepyard.data.labels import fit_to_model
from deepyard.data.source import ParquetSource
from deepyard.data.text import load_tokenizer
from deepyard.models import layer_init
from deepyard.spec import JobSpec
from deepyard.tasks.base import Task
from deepyard.telemetry.flops import (
    device_stats,
    forward_flops_per_sample,
    forward_flops_per_token,
    peak_flops_per_device,
)
from deepyard.train import checkpointing, pipeline, stage_tensor
from deepyard.train.control import Control, Faults
from deepyard.train.dist import WorkerContext, init_process_group, sum_over_ranks
from deepyard.train.plan import AttemptPlan
from deepyard.train.summary import summary, token_rate
from deepyard.train.topology import Layout

Emit = Callable[[dict[str, Any]], None]
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class Sources:
    """Resolved data locations (the driver prepares packaged datasets before launch)."""

    train: str
    eval: str | None


@dataclass
class Parts:
    """What one rank trains with, built once before the first step."""

    device: torch.device
    task: Task
    source: ParquetSource
    eval_data: TensorData | None
    batches: engines.Loader
    engine: Any
    total_steps: int
    dtype: torch.dtype
    num_parameters: int
    saves: checkpointing.Saves
    flops_per_sample: float  # forward pass (telemetry.flops)
    peak_flops: float | None  # all devices of the job; None on CPU
    flops_per_token: float | None = None  # language models (telemetry.flops)
    counts_rows: bool = True  # one rank per data-parallel replica counts its tokens
    stages: list[dict[str, Any]] | None = None  # pipeline stages: layers and parameters
    eval_classes: dict[str, Any] | None = None  # the last evaluation's per-class report


def train(
    spec: JobSpec,
    sources: Sources,
    ctx: WorkerContext,
    emit: Emit,
    plan: AttemptPlan | None = None,
    stop: threading.Event | None = None,
    hold: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Train the job on this rank; rank 0 returns the run summary (others return {}).

    Resumes from `plan.resume` when given; `stop` (set on preemption) ends the run at
    the next step boundary all ranks agree on, after a checkpoint. `hold(step)`, when
    given, is called after each evaluation inside the run (a PBT trial waits there for
    Tune's verdict: launch/hold.py).
    """
    plan = plan or AttemptPlan()
    lead = ctx.rank == 0
    say: Emit = emit if lead else (lambda event: None)
    parts = build_parts(spec, sources, ctx, say, plan)
    batches, saves, accumulation = parts.batches, parts.saves, spec.training.gradient_accumulation
    say(
        {
            "type": "start",
            "total_steps": parts.total_steps,
            "start_step": saves.start_step,
            "attempt": plan.attempt,
            "global_batch_size": spec.global_batch_size,
            "num_parameters": parts.num_parameters,
            "steps_per_epoch": batches.batches_per_epoch // accumulation,
            "flops_per_sample": parts.flops_per_sample,
            "flops_per_token": parts.flops_per_token,
            "peak_flops": parts.peak_flops,
            "world_size": ctx.world_size,
        }
    )
    control = Control(spec, ctx.rank, ctx.world_size, stop or threading.Event())
    faults = Faults(spec.faults, ctx.rank, plan.attempt, plan.job_pid)

    losses, step_times, tokens, outcome = [], [], [], "finished"
    for step in range(saves.start_step + 1, parts.total_steps + 1):
        faults.before(step)
        started, waited = time.perf_counter(), batches.wait_s
        result = parts.task.train_step(
            parts.engine,
            batches.next_batch,
            accumulation,
            parts.device,
            parts.dtype,
            _pad_id(batches),
        )
        step_times.append(time.perf_counter() - started)
        losses.append(result.loss)
        if spec.data.text:
            mine = result.tokens if parts.counts_rows else 0
            tokens.append(sum_over_ranks(mine, parts.device))
        else:
            tokens.append(0)
        timing = {
            "step": step,
            "step_time_s": step_times[-1],
            "forward_s": result.forward_s,
            "data_wait_s": batches.wait_s - waited,
            **(
                device_stats(parts.device)
                if (step - 1) % spec.training.log_every_steps == 0
                else {}
            ),
        }
        if lead:
            say(
                {
                    "type": "step",
                    **timing,
                    "epoch": batches.epoch,
                    "loss": result.loss,
                    **result.extra,
                    "lr": parts.engine.get_lr()[0],
                    "grad_norm": _grad_norm(parts.engine),
                    "samples_per_s": spec.global_batch_size / step_times[-1],
                    "tokens_per_s": tokens[-1] / step_times[-1] if tokens[-1] else None,
                    "t": time.time(),
                }
            )
        else:  # per-rank step times (stragglers): Ray drains every rank
            emit({"type": "rank_step", "rank": ctx.rank, **timing, "t": time.time()})
        evaluated = _due(spec.training.eval_every_steps, step, parts.total_steps)
        if evaluated:
            score(spec, parts, ctx, step, say)
        decision = control.after_step()
        if (
            decision.stop
            or decision.save
            or _due(spec.checkpoint.every_steps, step, parts.total_steps)
        ):
            checkpointing.save(saves, parts.engine, batches, step, say, wait=decision.stop)
            control.saved()
        if decision.stop:
            outcome = "preempted"
            break
        if evaluated and hold is not None:
            hold(step)
    control.close()

    if outcome == "finished":
        score(spec, parts, ctx, parts.total_steps, say)
        checkpointing.save(saves, parts.engine, batches, parts.total_steps, say, wait=True)
    if saves.saver is not None:
        saves.saver.close()
    batches.close()
    if not lead:
        return {}
    last = saves.start_step + len(losses)
    return {
        **summary(spec, last, losses, step_times, batches, parts.source.num_rows, saves),
        **token_rate(tokens, step_times),
        **({"eval_classes": parts.eval_classes} if parts.eval_classes else {}),
        **({"pipeline_stages": parts.stages} if parts.stages else {}),
        **_layout_entry(spec),
        "outcome": outcome,
    }


def build_parts(
    spec: JobSpec, sources: Sources, ctx: WorkerContext, say: Emit, plan: AttemptPlan
) -> Parts:
    """Process group, data, model, loader, DeepSpeed engine and checkpoint state, each phase
    reported; resumes from `plan.resume` when there is one."""
    say({"type": "phase", "name": "worker_started", "t": time.time()})
    device = init_process_group(ctx, spec.resources.cpus_per_worker, spec.resources.gpus_per_worker)
    say({"type": "phase", "name": "process_group", "t": time.time()})
    source, eval_data = _open_data(spec, sources)
    say({"type": "phase", "name": "data_loaded", "t": time.time()})
    _seed_everything(spec.training.seed)  # same initial weights on every rank
    task = tasks.get(spec.task_name)
    task.prepare(spec)
    model = _build_model(spec, source)
    flops_per_sample = forward_flops_per_sample(
        model, source.input_shape, spec.data.text is not None
    )
    # The ranks of one replica (its pipeline stages, its tensor-parallel group) share
    # rows and dropout masks; replicas differ.
    layout = Layout.of(spec)
    _seed_everything(layout.dropout_seed(spec.training.seed, ctx.rank))
    request = engines.LoaderRequest(
        source,
        layout.replica(ctx.rank),
        layout.data,
        spec.micro_batch_size,
        seed=spec.training.seed,
        shuffle=spec.data.shuffle,
        buffer_rows=spec.data.shuffle_buffer_rows,
        prefetch_batches=spec.data.prefetch_batches,
        pin_memory=device.type == "cuda",
    )
    batches = engines.build(spec.data.engine, request)
    total_steps = _total_steps(spec, batches)
    universal = checkpointing.wants_universal(plan, layout)
    staged, stages = model, None
    if spec.parallelism.pipeline > 1:
        staged = pipeline.build_module(model, spec, task, source.pad_id, source.input_shape)
        stages = pipeline.stages(staged, model.layers())  # type: ignore[operator]
    engine = task.build_engine(spec, staged, total_steps, universal)
    say({"type": "phase", "name": "engine_ready", "t": time.time()})
    saves = checkpointing.open_saves(spec, plan, ctx, engine, batches, say)
    saves.meta["model_data"] = _model_data(source)  # rebuilds it offline (deepyard eval)
    # A resume on another layout reads the buffers from these files alone.
    saves.meta["buffer_files"] = relayout.buffer_files(model, spec.parallelism.pipeline > 1)
    if stages is not None:  # files and names go by layer index: see relayout.check_layers
        saves.meta["pipeline_layers"] = stages[-1]["layers"][1]
    if plan.resume is not None:
        say({"type": "phase", "name": "checkpoint_restored", "t": time.time()})
    return Parts(
        device,
        task,
        source,
        eval_data,
        batches,
        engine,
        total_steps,
        DTYPES[spec.training.precision],
        sum(stage_tensor.whole_numel(p) for p in model.parameters()),
        saves,
        flops_per_sample,
        _peak(spec, device, ctx.world_size),
        forward_flops_per_token(model, source.input_shape),
        counts_rows=layout.counts(ctx.rank),
        stages=stages,
    )


def score(
    spec: JobSpec, parts: Parts, ctx: WorkerContext, step: int, say: Emit
) -> dict[str, float]:
    """Evaluate on the whole eval split (all ranks take part); {} without one."""
    if parts.eval_data is None:
        return {}
    result = parts.task.evaluate(
        parts.engine,
        parts.eval_data,
        ctx.rank,
        ctx.world_size,
        spec.micro_batch_size,
        parts.device,
        parts.dtype,
    )
    metrics = result.metrics
    say({"type": "eval", "step": step, "metrics": metrics, "t": time.time()})
    for folder, png in result.images.items():  # the driver writes them into the run
        say(image_event(folder, step, png))
    parts.saves.metrics, parts.saves.metrics_step = metrics, step
    parts.eval_classes = result.classes
    return metrics


def image_event(folder: str, step: int, png: bytes) -> dict[str, Any]:
    """A picture for RUN_DIR/<folder>/step_<step>.png (telemetry.record writes it)."""
    return {
        "type": "image",
        "step": step,
        "path": f"{folder}/step_{step:06d}.png",
        "png_base64": base64.b64encode(png).decode("ascii"),
        "t": time.time(),
    }


def _open_data(spec: JobSpec, sources: Sources) -> tuple[ParquetSource, TensorData | None]:
    """The training source (streamed) and the eval split (in memory, scored on all rows)."""
    tokenizer = None if spec.data.tokenizer is None else load_tokenizer(spec.data.tokenizer)
    label_kind = tasks.info(spec.task_name).labels
    source = ParquetSource(
        sources.train,
        spec.data.features,
        spec.data.label,
        text=spec.data.text,
        tokenizer=tokenizer,
        label_kind=label_kind,
    )
    if sources.eval is None:
        return source, None
    eval_data = read_eval_split(spec.data, sources.eval, tokenizer, label_kind)
    fitted = fit_to_model(
        eval_data, source.num_classes, label_kind, sources.eval, spec.data.label, sources.train
    )
    return source, fitted


def _vocab(source: ParquetSource) -> models.Vocab | None:
    """A token model learns the tokenizer's vocabulary; None for feature data."""
    if source.tokenizer is None or source.pad_id is None:
        return None
    return models.Vocab(source.tokenizer.get_vocab_size(), source.pad_id)


def _build_model(spec: JobSpec, source: ParquetSource) -> torch.nn.Module:
    """The spec's model for this data. One that pipeline stages can cut is initialised
    layer by layer (deepyard.models.layer_init), in every layout alike; under pipeline
    parallelism it stays on the meta device here, and each rank materialises its stage."""
    name, args, vocab = spec.model.name, spec.model.args, _vocab(source)
    if not models.get(name).pipeline:
        return models.build(name, args, source.input_shape, source.num_classes, vocab)
    model = layer_init.build_on_meta(name, args, source.input_shape, source.num_classes, vocab)
    if spec.parallelism.pipeline > 1:
        return model
    return layer_init.materialise_all(model, spec.training.seed)


def _model_data(source: ParquetSource) -> dict[str, Any]:
    """What the model was built for, recorded in each checkpoint's manifest."""
    vocab = _vocab(source)
    shape = list(source.input_shape)
    return {
        "input_shape": shape,
        "num_classes": source.num_classes,
        "vocab": None if vocab is None else [vocab.size, vocab.pad_id],
    }


def _total_steps(spec: JobSpec, batches: engines.Loader) -> int:
    if spec.training.max_steps is not None:
        return spec.training.max_steps
    per_epoch = batches.batches_per_epoch // spec.training.gradient_accumulation
    if per_epoch == 0:
        raise ValueError(
            f"one epoch of {batches.batches_per_epoch} micro-batches per rank is shorter than "
            f"training.gradient_accumulation={spec.training.gradient_accumulation}; lower it"
        )
    assert spec.training.epochs is not None
    return spec.training.epochs * per_epoch


def _layout_entry(spec: JobSpec) -> dict[str, Any]:
    """The summary's `parallelism` of a model split over ranks: {data, pipeline, tensor}
    (replicas = workers / (pipeline x tensor)); nothing for data parallelism."""
    layout = Layout.of(spec)
    return {"parallelism": layout.describe()} if layout.model_parallel else {}


def _pad_id(batches: engines.Loader) -> int | None:
    """The pad id of token batches (text sources), else None."""
    return getattr(batches, "pad_id", None)


def _grad_norm(engine: Any) -> float | None:
    """The global gradient norm of the last step, when DeepSpeed computed one (clipping)."""
    norm = engine.get_global_grad_norm()
    if norm is None:
        return None
    return float(norm.item() if isinstance(norm, torch.Tensor) else norm)


def _peak(spec: JobSpec, device: torch.device, world_size: int) -> float | None:
    per_device = peak_flops_per_device(
        device, spec.training.precision, spec.telemetry.peak_flops_per_device
    )
    return None if per_device is None else per_device * world_size


def _due(every: int | None, step: int, total: int) -> bool:
    return every is not None and step % every == 0 and step < total


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
