"""Spec → DeepSpeed config, optimizer, LR schedule and engine (one builder each)."""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
from torch import nn

from deepyard.spec import JobSpec
from deepyard.train import pipe_clip, stage_tensor, tensor_parallel


def deepspeed_config(spec: JobSpec) -> dict[str, Any]:
    """The DeepSpeed config derived from the spec; `spec.deepspeed` entries win."""
    zero: dict[str, Any] = {"stage": spec.parallelism.zero_stage}
    if spec.parallelism.offload_optimizer != "none":
        zero["offload_optimizer"] = {"device": spec.parallelism.offload_optimizer}
    if spec.parallelism.offload_params != "none":
        zero["offload_param"] = {"device": spec.parallelism.offload_params}
    config: dict[str, Any] = {
        "train_micro_batch_size_per_gpu": spec.micro_batch_size,
        "gradient_accumulation_steps": spec.training.gradient_accumulation,
        "train_batch_size": spec.global_batch_size,
        "zero_optimization": zero,
        # deepyard builds torch optimizers: no multi-minute compile of DeepSpeed's kernels.
        "zero_allow_untested_optimizer": True,
        "zero_force_ds_cpu_optimizer": False,
        "steps_per_print": 2**31 - 1,
        "wall_clock_breakdown": False,
    }
    if spec.optimizer.grad_clip is not None:
        config["gradient_clipping"] = spec.optimizer.grad_clip
    if spec.training.precision == "bf16":
        config["bf16"] = {"enabled": True}
    elif spec.training.precision == "fp16":
        config["fp16"] = {"enabled": True, "initial_scale_power": 16}
    return _merge(config, spec.deepspeed)


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def build_optimizer(spec: JobSpec, model: nn.Module) -> torch.optim.Optimizer:
    opt = spec.optimizer
    params = param_groups(model, opt.lr)
    if opt.name == "sgd":
        return torch.optim.SGD(
            params, lr=opt.lr, momentum=opt.momentum, weight_decay=opt.weight_decay
        )
    return torch.optim.AdamW(params, lr=opt.lr, betas=opt.betas, weight_decay=opt.weight_decay)


def param_groups(model: nn.Module, lr: float) -> list[dict[str, Any]]:
    """One group of the trainable parameters, or the model's own: a model may define
    `optimizer_groups()` → [{"params": [...], "lr_scale": x}] (e.g. a pretrained backbone
    tuned at a tenth of the head's LR); the schedule scales every group alike."""
    groups = getattr(model, "optimizer_groups", None)
    raw: list[dict[str, Any]] = (
        groups() if callable(groups) else [{"params": list(model.parameters())}]
    )
    out = []
    for group in raw:
        scale = float(group.get("lr_scale", 1.0))
        trainable = [p for p in group["params"] if p.requires_grad]
        if trainable:
            out.append({"params": trainable, "lr": lr * scale, "lr_scale": scale})
    return out


def lr_factor(spec: JobSpec, total_steps: int, step: int) -> float:
    """Multiplier of the peak LR at optimizer step `step` (0-based): warmup, then decay."""
    opt = spec.optimizer
    if step < opt.warmup_steps:
        return (step + 1) / opt.warmup_steps
    if opt.schedule == "constant":
        return 1.0
    span = max(1, total_steps - opt.warmup_steps)
    progress = min(1.0, (step - opt.warmup_steps) / span)
    if opt.schedule == "linear":
        decay = 1.0 - progress
    else:
        decay = 0.5 * (1.0 + math.cos(math.pi * progress))
    return opt.min_lr_ratio + (1.0 - opt.min_lr_ratio) * decay


def build_scheduler(
    spec: JobSpec, optimizer: torch.optim.Optimizer, total_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(spec, total_steps, step)
    )


def use_optimizer_values(engine: Any, spec: JobSpec) -> None:
    """After loading a checkpoint saved with other optimizer values (a PBT exploit explores
    new ones): this spec's LR, weight decay, betas and momentum replace the loaded ones,
    and the schedule goes on from the loaded step with this spec's peak LR."""
    opt, scheduler = spec.optimizer, engine.lr_scheduler
    groups = engine.optimizer.param_groups
    scheduler.base_lrs = [opt.lr * g.get("lr_scale", 1.0) for g in groups]
    factor = scheduler.lr_lambdas[0](scheduler.last_epoch)
    for group, base in zip(groups, scheduler.base_lrs, strict=True):
        group.update(initial_lr=base, lr=base * factor, weight_decay=opt.weight_decay)
        if "betas" in group:
            group["betas"] = tuple(opt.betas)
        if "momentum" in group:
            group["momentum"] = opt.momentum


def build_engine(
    spec: JobSpec, model: nn.Module, total_steps: int, load_universal: bool = False
) -> Any:
    """deepspeed.initialize with our optimizer and schedule; returns the engine.

    `load_universal`: the checkpoint to resume from is in DeepSpeed's universal format
    (converted because the world size changed).
    """
    import deepspeed

    config = deepspeed_config(spec)
    if spec.parallelism.pipeline == 1:
        config = tensor_parallel.with_tensor_parallel(
            config, spec.model.name, spec.model.args, model, spec.parallelism.tensor
        )
    else:  # in stages, train.stage_tensor has split the layers already
        config = stage_tensor.with_stage_tensor(config, spec.parallelism.tensor)
    if load_universal:
        config["checkpoint"] = {**config.get("checkpoint", {}), "load_universal": True}
    optimizer = build_optimizer(spec, model)
    scheduler = build_scheduler(spec, optimizer, total_steps)
    engine, _, _, _ = deepspeed.initialize(
        model=model,
        optimizer=optimizer,
        lr_scheduler=scheduler,
        config=config,
    )
    pipe_clip.install(engine)  # DeepSpeed's own norm misses later stages without ZeRO
    return engine
