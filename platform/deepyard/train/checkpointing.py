"""The training loop's side of checkpoints: open the saver, resume, save at a boundary."""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch.distributed

from deepyard import spec as specs
from deepyard.checkpoint import relayout, restore
from deepyard.checkpoint.retention import RetentionPolicy
from deepyard.checkpoint.store import Store
from deepyard.checkpoint.writer import Checkpointer
from deepyard.data import engines
from deepyard.spec import JobSpec
from deepyard.train.dist import WorkerContext
from deepyard.train.engine import use_optimizer_values
from deepyard.train.plan import AttemptPlan
from deepyard.train.topology import Layout

Emit = Callable[[dict[str, Any]], None]


@dataclass
class Saves:
    """Checkpointing state of one rank for one attempt; `saver` is None when it is off."""

    saver: Checkpointer | None
    sync: bool = False  # checkpoint.async=false: training waits for each write
    start_step: int = 0
    metrics: dict[str, float] = field(default_factory=dict)  # newest eval, for keep_best
    metrics_step: int | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    blocked_s: list[float] = field(default_factory=list)  # training blocked, per save


def staging_dir(plan: AttemptPlan, rank: int | None = None) -> Path:
    """Node-local scratch of this attempt: per rank for downloads and uploads (ranks on one
    node must not share them), shared on the node for a universal conversion."""
    root = Path(tempfile.gettempdir()) / "deepyard-checkpoints" / plan.nonce
    return root if rank is None else root / f"rank{rank}"


def wants_universal(plan: AttemptPlan, layout: Layout) -> bool:
    """Whether the engine must load DeepSpeed's universal format (the layout changed)."""
    resume = plan.resume
    return resume is not None and relayout.needs_universal(resume.manifest or {}, layout)


def open_saves(
    spec: JobSpec,
    plan: AttemptPlan,
    ctx: WorkerContext,
    engine: Any,
    batches: engines.Loader,
    say: Emit,
) -> Saves:
    """The saver for this attempt, after resuming from `plan.resume` if there is one."""
    if plan.checkpoint_uri is None or plan.lineage is None:
        return Saves(None)
    store = Store.open(plan.checkpoint_uri)
    saver = Checkpointer(
        store,
        plan.lineage,
        ctx.rank,
        ctx.world_size,
        plan.nonce,
        RetentionPolicy.from_spec(spec.checkpoint),
        staging_dir(plan, ctx.rank),
        say,
        copy=spec.checkpoint.async_save,
    )
    saver.attach(engine)
    meta = {
        "job": spec.name,
        "lineage": plan.lineage,
        "attempt": plan.attempt,
        "world_size": ctx.world_size,
        "zero_stage": spec.parallelism.zero_stage,
        "parallelism": Layout.of(spec).describe(),
        "spec_hash": specs.spec_hash(spec),
        "spec": spec.model_dump(mode="json"),
    }
    saves = Saves(saver, sync=not spec.checkpoint.async_save, meta=meta)
    if plan.resume is not None:
        _resume(spec, plan, ctx, engine, batches, store, saves, say)
    return saves


def _resume(
    spec: JobSpec,
    plan: AttemptPlan,
    ctx: WorkerContext,
    engine: Any,
    batches: engines.Loader,
    store: Store,
    saves: Saves,
    say: Emit,
) -> None:
    started = time.perf_counter()
    resume = plan.resume
    assert resume is not None and resume.manifest is not None
    download = staging_dir(plan, ctx.rank) / "resume"
    saved_dir = load_dir = restore.local_copy(store, resume, download)
    universal = staging_dir(plan) / "universal"
    layout = Layout.of(spec)
    if wants_universal(plan, layout):
        tag = resume.prefix.rsplit("/", 1)[1]
        universal.mkdir(parents=True, exist_ok=True)
        to_pipeline = layout.pipeline > 1
        rename = partial(
            relayout.rename_parameters, manifest=resume.manifest, to_pipeline=to_pipeline
        )
        load_dir = restore.to_universal(saved_dir, tag, universal, ctx.local_rank, rename)
    elif relayout.needs_reslice(resume.manifest, layout):  # ZeRO-0 tensor slices
        tag = resume.prefix.rsplit("/", 1)[1]
        universal.mkdir(parents=True, exist_ok=True)
        load_dir = restore.to_tensor_degree(
            saved_dir, tag, universal, ctx.local_rank, resume.manifest, layout.tensor
        )
    restore.restore(
        engine,
        batches,
        resume,
        load_dir,
        ctx.rank,
        layout,
        spec.micro_batch_size,
        spec.training.seed,
        saved_dir,
    )
    # Loaded everywhere: the scratch copies are no longer needed.
    if ctx.world_size > 1:
        torch.distributed.barrier()
    shutil.rmtree(download, ignore_errors=True)
    if ctx.local_rank == 0:
        shutil.rmtree(universal, ignore_errors=True)
    saved_optimizer = resume.manifest.get("spec", {}).get("optimizer")
    if saved_optimizer != spec.optimizer.model_dump(mode="json"):
        # e.g. PBT explored new values: they take over (in every engine of a MultiEngine)
        for part in getattr(engine, "engines", {"": engine}).values():
            use_optimizer_values(part, spec)
    saves.start_step = resume.step
    saves.metrics = dict(resume.manifest.get("metrics") or {})
    saves.metrics_step = resume.manifest.get("metrics_step")
    say(
        {
            "type": "resumed",
            "step": resume.step,
            "checkpoint": f"{store.shown_uri}/{resume.prefix}",
            "from_world_size": resume.manifest["world_size"],
            "world_size": ctx.world_size,
            "restore_s": round(time.perf_counter() - started, 3),
            "t": time.time(),
        }
    )


def save(
    saves: Saves, engine: Any, batches: engines.Loader, step: int, say: Emit, wait: bool = False
) -> None:
    """Checkpoint at this step boundary (all ranks call it at the same step)."""
    if saves.saver is None:
        return
    started = time.perf_counter()
    meta = {
        **saves.meta,
        "step": step,
        "epoch": batches.epoch,
        "created": time.time(),
        "metrics": saves.metrics,
        "metrics_step": saves.metrics_step,
    }
    saves.saver.save(engine, step, meta, batches.state_dict())
    if wait or saves.sync:
        saves.saver.wait()
    blocked = time.perf_counter() - started
    saves.blocked_s.append(blocked)
    say(
        {
            "type": "checkpoint",
            "step": step,
            "lineage": saves.meta.get("lineage"),  # `deepyard eval RUN_DIR` finds it by this
            "blocked_s": round(blocked, 4),
            "t": time.time(),
        }
    )
