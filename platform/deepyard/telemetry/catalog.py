"""Every Prometheus metric deepyard exports: name, type, labels and help, in one place.

Names follow `deepyard_<area>_<what>_<unit>`. Rank-level metrics carry the labels
`job`, `run`, `attempt` and `rank` (first, in that order; a metric may add its own after
them); job-level ones `job` and `run`. Nothing is exported
from anywhere else: the exporter builds its collectors from this table, and the tests
check that every metric a dashboard or alert rule names is defined here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Kind = Literal["counter", "gauge", "histogram"]
RANK = ("job", "run", "attempt", "rank")
JOB = ("job", "run")
STEP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
SAVE_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0)


@dataclass(frozen=True)
class Metric:
    name: str
    kind: Kind
    help: str
    labels: tuple[str, ...]
    buckets: tuple[float, ...] = ()
    needs: str | None = None  # only exported with this (token inputs, NVML); else always

    @property
    def series_names(self) -> tuple[str, ...]:
        """The names Prometheus stores (counters get _total; histograms three series)."""
        if self.kind == "histogram":
            return (f"{self.name}_bucket", f"{self.name}_sum", f"{self.name}_count")
        if self.kind == "counter":
            return (f"{self.name}_total",)
        return (self.name,)


CATALOGUE: tuple[Metric, ...] = (
    # training, per rank
    Metric(
        "deepyard_train_step_duration_seconds",
        "histogram",
        "Optimizer step time.",
        RANK,
        STEP_BUCKETS,
    ),
    Metric(
        "deepyard_train_forward_duration_seconds",
        "histogram",
        "Forward-pass time of this rank's step (no collectives under ZeRO 0-2: a slow rank "
        "shows here while every rank's step time looks alike).",
        RANK,
        STEP_BUCKETS,
    ),
    Metric("deepyard_train_steps", "counter", "Optimizer steps completed.", RANK),
    Metric("deepyard_train_step", "gauge", "The newest optimizer step.", RANK),
    Metric(
        "deepyard_train_samples",
        "counter",
        "Training samples consumed (all ranks' "
        "share on rank 0's series: rank 0 reports the global batch).",
        RANK,
    ),
    Metric(
        "deepyard_train_throughput_samples_per_second",
        "gauge",
        "Samples per second of the newest step, over all ranks.",
        RANK,
    ),
    Metric(
        "deepyard_train_throughput_tokens_per_second",
        "gauge",
        "Tokens per second of the newest step, over all ranks (token models).",
        RANK,
        needs="token inputs",
    ),
    Metric(
        "deepyard_train_model_flops_utilization_ratio",
        "gauge",
        "Model FLOPs per second over the devices' peak (unset on CPU).",
        RANK,
    ),
    Metric(
        "deepyard_train_achieved_flops_per_second",
        "gauge",
        "Model FLOPs per second achieved by the job.",
        RANK,
    ),
    Metric("deepyard_train_loss", "gauge", "Training loss of the newest step.", RANK),
    Metric("deepyard_train_learning_rate", "gauge", "Learning rate of the newest step.", RANK),
    Metric("deepyard_train_grad_norm", "gauge", "Global gradient norm of the newest step.", RANK),
    # A task's own per-step figures (TaskInfo.step_metrics, the columns history.parquet adds
    # for it), one series per figure: the `name` label holds the figure's name.
    Metric(
        "deepyard_train_step_metric",
        "gauge",
        "A task's own figure of the newest step, named by the `name` label (a GAN: loss_d, "
        "loss_g, d_real, d_fake).",
        (*RANK, "name"),
        needs="a task with step metrics (gan)",
    ),
    Metric(
        "deepyard_data_wait_seconds",
        "counter",
        "Time the training loop waited for input batches.",
        RANK,
    ),
    # checkpoints
    Metric(
        "deepyard_checkpoint_save_duration_seconds",
        "histogram",
        "Time to write and publish a checkpoint (background).",
        JOB,
        SAVE_BUCKETS,
    ),
    Metric(
        "deepyard_checkpoint_blocked_duration_seconds",
        "histogram",
        "Time training was blocked by a checkpoint save.",
        JOB,
        SAVE_BUCKETS,
    ),
    Metric(
        "deepyard_checkpoint_load_duration_seconds",
        "histogram",
        "Time to restore a checkpoint.",
        JOB,
        SAVE_BUCKETS,
    ),
    Metric("deepyard_checkpoint_written_bytes", "counter", "Checkpoint bytes published.", JOB),
    Metric("deepyard_checkpoint_saves", "counter", "Checkpoints published.", JOB),
    Metric(
        "deepyard_checkpoint_last_success_timestamp_seconds",
        "gauge",
        "When the newest checkpoint was published (Unix time).",
        JOB,
    ),
    Metric(
        "deepyard_checkpoint_last_step",
        "gauge",
        "Optimizer step of the newest published checkpoint (the one a restart resumes from).",
        JOB,
    ),
    Metric(
        "deepyard_checkpoint_interval_seconds",
        "gauge",
        "The configured save interval in seconds (every_minutes), for overdue alerts.",
        JOB,
    ),
    # the job
    Metric(
        "deepyard_job_info",
        "gauge",
        "Always 1; labels describe the job.",
        (*JOB, "spec_hash", "model", "workers"),
    ),
    Metric(
        "deepyard_job_state", "gauge", "1 for the job's current state, else 0.", (*JOB, "state")
    ),
    Metric("deepyard_job_attempt", "gauge", "The current attempt (1 before any restart).", JOB),
    Metric("deepyard_job_restarts", "counter", "Automatic restarts after a failure.", JOB),
    Metric("deepyard_job_failures", "counter", "Failed attempts, by cause.", (*JOB, "cause")),
    Metric(
        "deepyard_job_recovery_duration_seconds",
        "histogram",
        "From a failure to the first step of the next attempt.",
        JOB,
        SAVE_BUCKETS,
    ),
    Metric(
        "deepyard_job_steps_redone",
        "counter",
        "Steps trained again after a restart (lost work).",
        JOB,
    ),
    Metric(
        "deepyard_job_goodput_ratio",
        "gauge",
        "Productive step time over wall time since submission.",
        JOB,
    ),
    Metric("deepyard_job_training_seconds", "counter", "Time spent in optimizer steps.", JOB),
    Metric(
        "deepyard_job_queue_wait_seconds",
        "gauge",
        "Time from submission until the workers had their resources.",
        JOB,
    ),
    Metric("deepyard_job_duration_seconds", "gauge", "Time since submission.", JOB),
    # sweeps: served by the sweep driver (sweep/metrics.py), `job` is the sweep's name
    Metric(
        "deepyard_sweep_trials",
        "gauge",
        "Trials of the sweep in each state (pending, running, paused, finished, stopped "
        "early, failed, not run).",
        ("job", "state"),
        needs="a sweep driver serving --metrics-port",
    ),
    Metric(
        "deepyard_sweep_best_metric",
        "gauge",
        "The sweep's best value so far of its metric (the `metric` label names it).",
        ("job", "metric"),
        needs="a sweep driver serving --metrics-port",
    ),
    # devices (where NVML is present)
    Metric(
        "deepyard_gpu_utilization_ratio", "gauge", "GPU busy fraction (NVML).", RANK, needs="NVML"
    ),
    Metric(
        "deepyard_gpu_memory_used_bytes", "gauge", "GPU memory in use (NVML).", RANK, needs="NVML"
    ),
    # checkpoint failures: the failing-save alert fires on the first one, also for jobs that
    # save by steps (no interval, so no overdue alert)
    Metric(
        "deepyard_checkpoint_save_failures",
        "counter",
        "Checkpoint saves that failed (nothing was published).",
        JOB,
    ),
)

BY_NAME = {m.name: m for m in CATALOGUE}
JOB_STATES = ("pending", "starting", "running", "recovering", "succeeded", "failed", "preempted")


def series_names() -> set[str]:
    """Every series name a scrape can contain."""
    return {name for metric in CATALOGUE for name in metric.series_names}
