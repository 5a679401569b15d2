"""Rank 0's run summary: steps, throughput once running, final loss, data wait, the
newest evaluation and checkpoint figures (what `deepyard run --json` prints last)."""

from __future__ import annotations

from typing import Any

import numpy as np

from deepyard.data import engines
from deepyard.spec import JobSpec
from deepyard.train import checkpointing


def token_rate(tokens: list[int], step_times: list[float]) -> dict[str, float]:
    """Tokens per second once running (as samples_per_s: the first step is warm-up);
    {} for feature inputs."""
    pairs = list(zip(tokens, step_times, strict=True))
    steady = pairs[1:] if len(pairs) > 1 else pairs
    if not sum(t for t, _ in steady):
        return {}
    return {
        "tokens_per_s": round(sum(t for t, _ in steady) / max(sum(s for _, s in steady), 1e-9), 2)
    }


def summary(
    spec: JobSpec,
    last_step: int,
    losses: list[float],
    step_times: list[float],
    batches: engines.Loader,
    train_rows: int,
    saves: checkpointing.Saves,
) -> dict[str, Any]:
    samples = last_step * spec.global_batch_size
    # Throughput once running: the first step carries one-off warm-up (allocations, caches).
    steady = step_times[1:] if len(step_times) > 1 else step_times
    tail = losses[-min(len(losses), spec.training.log_every_steps) :] or [float("nan")]
    out: dict[str, Any] = {
        "steps": last_step,
        "steps_this_attempt": len(losses),
        "start_step": saves.start_step,
        "samples": samples,
        "epochs": round(samples / max(1, train_rows), 3),
        "train_time_s": round(sum(step_times), 3),
        "samples_per_s": round(spec.global_batch_size * len(steady) / max(sum(steady), 1e-9), 2),
        "final_loss": float(np.mean(tail)),
        "data_wait_fraction": round(batches.wait_s / max(sum(step_times), 1e-9), 4),
        "eval": saves.metrics,
        "cursor": batches.state_dict(),
    }
    if saves.saver is not None:
        blocked = saves.blocked_s
        out["checkpoints"] = {
            "saved": len(saves.saver.saved_steps),
            "last_step": saves.saver.saved_steps[-1] if saves.saver.saved_steps else None,
            "blocked_s_total": round(sum(blocked), 4),
            "blocked_s_mean": round(sum(blocked) / max(1, len(blocked)), 4),
        }
    return out
