"""The job's Prometheus endpoint: the run's events turned into the catalogue's metrics.

It lives where the run is recorded: in the `deepyard run` driver (which receives every
rank's events through Ray, so one endpoint per job serves a whole multi-node job), or
in rank 0 under torchrun. It listens on `telemetry.address` (loopback by default) and
an ephemeral port, so jobs sharing a machine never collide, and announces itself in a
Prometheus file_sd target file, `<targets_dir>/<job>-<run>.json`, removed when it stops.
Point Prometheus at the directory:

    scrape_configs:
      - job_name: deepyard
        honor_labels: true   # keep the metrics' own `job` label (the deepyard job's name)
        file_sd_configs: [{files: ["~/.cache/deepyard/prometheus-targets/*.json"]}]
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    start_http_server,
)

from deepyard.data.packaged_sources import cache_root
from deepyard.spec import JobSpec
from deepyard.tasks.catalog import info
from deepyard.telemetry.catalog import BY_NAME, CATALOGUE, JOB, JOB_STATES, RANK
from deepyard.telemetry.flops import achieved_flops_per_s

# No `_created` series: no dashboard uses them, and they are 11% of every scrape.
disable_created_metrics()


def targets_dir(spec: JobSpec) -> Path:
    configured = spec.telemetry.targets_dir
    return Path(configured).expanduser() if configured else cache_root() / "prometheus-targets"


def build_collectors(
    registry: CollectorRegistry,
) -> tuple[dict[str, Counter], dict[str, Gauge], dict[str, Histogram]]:
    """One prometheus_client collector per catalogue entry, in `registry`, by kind."""
    counters, gauges, histograms = {}, {}, {}
    for m in CATALOGUE:
        if m.kind == "counter":
            counters[m.name] = Counter(m.name, m.help, m.labels, registry=registry)
        elif m.kind == "histogram":
            histograms[m.name] = Histogram(
                m.name, m.help, m.labels, registry=registry, buckets=m.buckets
            )
        else:
            gauges[m.name] = Gauge(m.name, m.help, m.labels, registry=registry)
    return counters, gauges, histograms


class MetricsExporter:
    """Feed it every event of the run (`observe`); `start()` serves, `stop()` ends."""

    def __init__(self, spec: JobSpec, run_id: str, submitted_at: float, spec_hash: str) -> None:
        self.spec, self.run_id, self.submitted_at = spec, run_id, submitted_at
        self.registry = CollectorRegistry()
        self.counters, self.gauges, self.histograms = build_collectors(self.registry)
        self.job = {"job": spec.name, "run": run_id}
        self.attempt = 1
        self.global_batch = spec.global_batch_size
        self.step_metrics = info(spec.task_name).step_metrics  # a GAN's loss_d, loss_g, ...
        self.flops_per_sample = 0.0
        self.flops_per_token: float | None = None  # language models: MFU from tokens/s
        self.peak_flops: float | None = None
        self.productive_s: dict[int, float] = {}  # step -> time of its newest run
        self.children: dict[tuple[str, tuple[str, ...]], Any] = {}
        self.settled_s = 0.0  # productive time of steps no restart can redo (checkpointed)
        self.server: Any = None
        self.target_file: Path | None = None
        self.address = ""
        self.gauges["deepyard_job_info"].labels(
            **self.job,
            spec_hash=spec_hash,
            model=spec.model.name,
            workers=str(spec.resources.num_workers),
        ).set(1)
        every_min = spec.checkpoint.every_minutes
        if every_min:
            self.gauges["deepyard_checkpoint_interval_seconds"].labels(**self.job).set(
                every_min * 60
            )
        self.gauges["deepyard_job_duration_seconds"].labels(**self.job).set_function(
            lambda: time.time() - self.submitted_at
        )
        self.gauges["deepyard_job_goodput_ratio"].labels(**self.job).set_function(self.goodput)
        self.gauges["deepyard_job_attempt"].labels(**self.job).set(1)
        # Job-level counters and histograms exist from the start, at zero: increase() and
        # rate() then see the first event, and "no failures" is a value, not an absence.
        for name, collector in (*self.counters.items(), *self.histograms.items()):
            if BY_NAME[name].labels == JOB:
                collector.labels(**self.job)
        self.set_state("pending")

    # -- lifecycle --------------------------------------------------------------------
    def start(self) -> str:
        """Serve /metrics and write the file_sd target file; returns host:port."""
        tel = self.spec.telemetry
        self.server, _ = start_http_server(tel.port, tel.address, self.registry)
        host = tel.address if tel.address not in ("0.0.0.0", "::") else _node_ip()
        self.address = f"{host}:{self.server.server_port}"
        folder = targets_dir(self.spec)
        folder.mkdir(parents=True, exist_ok=True)
        self.target_file = folder / f"{self.spec.name}-{self.run_id}.json"
        target = [{"targets": [self.address], "labels": {"deepyard_job": self.spec.name}}]
        tmp = self.target_file.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(target))
        os.replace(tmp, self.target_file)
        return self.address

    def stop(self, state: str) -> None:
        """Final state; keep serving `telemetry.linger_s` for a last scrape, then stop."""
        self.set_state(state)
        if self.server is None:
            return
        if self.spec.telemetry.linger_s:
            time.sleep(self.spec.telemetry.linger_s)
        self.server.shutdown()
        self.server.server_close()
        self.server = None
        if self.target_file is not None:
            self.target_file.unlink(missing_ok=True)

    def set_state(self, state: str) -> None:
        for name in JOB_STATES:
            self.gauges["deepyard_job_state"].labels(**self.job, state=name).set(name == state)

    def goodput(self) -> float:
        """Productive step time (steps not redone later) over wall time since submission."""
        wall = time.time() - self.submitted_at
        productive = self.settled_s + sum(self.productive_s.values())
        return productive / wall if wall > 0 else 0.0

    # -- events -----------------------------------------------------------------------
    def observe(self, event: dict[str, Any]) -> None:
        handler = getattr(self, f"_on_{event.get('type')}", None)
        if handler is not None:
            handler(event)

    def _rank(self, rank: int) -> dict[str, str]:
        return {**self.job, "attempt": str(self.attempt), "rank": str(rank)}

    def _child(self, name: str, labels: dict[str, str]) -> Any:
        """The labelled series, bound once: `labels()` validates on every call, which was
        three quarters of the per-event cost."""
        key = (name, tuple(labels.values()))
        child = self.children.get(key)
        if child is None:
            collector = self.counters.get(name) or self.gauges.get(name) or self.histograms[name]
            child = self.children[key] = collector.labels(**labels)
        return child

    def _forget_attempts_before(self, attempt: int) -> None:
        """A new attempt: earlier attempts' per-rank gauges would show stale values (their
        counters and histograms stay, for rate()). Every per-rank series is bound through
        `_child`, so the bound ones are all there are."""
        for name, values in [
            key
            for key in self.children
            if BY_NAME[key[0]].labels[: len(RANK)] == RANK and key[1][2] != str(attempt)
        ]:
            if name in self.gauges:
                self.gauges[name].remove(*values)
            del self.children[(name, values)]

    def _on_phase(self, event: dict[str, Any]) -> None:
        if event["name"] == "resources_reserved" and event.get("attempt", 1) == 1:
            wait = event["t"] - self.submitted_at
            self.gauges["deepyard_job_queue_wait_seconds"].labels(**self.job).set(wait)
            self.set_state("starting")

    def _on_start(self, event: dict[str, Any]) -> None:
        self.attempt = event.get("attempt", 1)
        self._forget_attempts_before(self.attempt)
        self.gauges["deepyard_job_attempt"].labels(**self.job).set(self.attempt)
        self.flops_per_sample = float(event.get("flops_per_sample") or 0.0)
        self.flops_per_token = event.get("flops_per_token")
        self.peak_flops = event.get("peak_flops")
        self.set_state("running")

    def _on_step(self, event: dict[str, Any]) -> None:
        labels = self._rank(0)
        step_time = event["step_time_s"]
        self._rank_step(labels, event)
        self._device(labels, event)
        self._child("deepyard_train_samples", labels).inc(self.global_batch)
        self._child("deepyard_train_throughput_samples_per_second", labels).set(
            event["samples_per_s"]
        )
        if event.get("tokens_per_s"):
            self._child("deepyard_train_throughput_tokens_per_second", labels).set(
                event["tokens_per_s"]
            )
        achieved = (
            achieved_flops_per_s(
                self.flops_per_sample,
                self.flops_per_token,
                event["samples_per_s"],
                event.get("tokens_per_s"),
            )
            or 0.0
        )
        self._child("deepyard_train_achieved_flops_per_second", labels).set(achieved)
        if self.peak_flops:
            self._child("deepyard_train_model_flops_utilization_ratio", labels).set(
                achieved / self.peak_flops
            )
        self._child("deepyard_train_loss", labels).set(event["loss"])
        self._child("deepyard_train_learning_rate", labels).set(event["lr"])
        if event.get("grad_norm") is not None:
            self._child("deepyard_train_grad_norm", labels).set(event["grad_norm"])
        for name in self.step_metrics:
            if event.get(name) is not None:
                series = {**labels, "name": name}
                self._child("deepyard_train_step_metric", series).set(event[name])
        self.counters["deepyard_job_training_seconds"].labels(**self.job).inc(step_time)
        self.productive_s[event["step"]] = step_time

    def _on_rank_step(self, event: dict[str, Any]) -> None:
        labels = self._rank(event["rank"])
        self._rank_step(labels, event)
        self._device(labels, event)

    def _device(self, labels: dict[str, str], event: dict[str, Any]) -> None:
        if "gpu_utilization" in event:
            self._child("deepyard_gpu_utilization_ratio", labels).set(event["gpu_utilization"])
        if "gpu_memory_bytes" in event:
            self._child("deepyard_gpu_memory_used_bytes", labels).set(event["gpu_memory_bytes"])

    def _rank_step(self, labels: dict[str, str], event: dict[str, Any]) -> None:
        self._child("deepyard_train_step_duration_seconds", labels).observe(event["step_time_s"])
        if "forward_s" in event:
            self._child("deepyard_train_forward_duration_seconds", labels).observe(
                event["forward_s"]
            )
        self._child("deepyard_train_steps", labels).inc()
        self._child("deepyard_train_step", labels).set(event["step"])
        self._child("deepyard_data_wait_seconds", labels).inc(event["data_wait_s"])

    def _on_checkpoint(self, event: dict[str, Any]) -> None:
        self.histograms["deepyard_checkpoint_blocked_duration_seconds"].labels(**self.job).observe(
            event["blocked_s"]
        )

    def _on_checkpoint_saved(self, event: dict[str, Any]) -> None:
        # Steps up to a checkpoint are never redone: fold them (bounded memory, fast scrapes).
        for step in [n for n in self.productive_s if n <= event["step"]]:
            self.settled_s += self.productive_s.pop(step)
        self.histograms["deepyard_checkpoint_save_duration_seconds"].labels(**self.job).observe(
            event["write_s"]
        )
        self.counters["deepyard_checkpoint_written_bytes"].labels(**self.job).inc(
            event["size_bytes"]
        )
        self.counters["deepyard_checkpoint_saves"].labels(**self.job).inc()
        self.gauges["deepyard_checkpoint_last_success_timestamp_seconds"].labels(**self.job).set(
            event["t"]
        )
        self.gauges["deepyard_checkpoint_last_step"].labels(**self.job).set(event["step"])

    def _on_resumed(self, event: dict[str, Any]) -> None:
        # A new driver (a KubeRay retry is a new cluster) learns the newest checkpoint here.
        self.gauges["deepyard_checkpoint_last_step"].labels(**self.job).set(event["step"])
        self.histograms["deepyard_checkpoint_load_duration_seconds"].labels(**self.job).observe(
            event["restore_s"]
        )

    def _on_attempt_failed(self, event: dict[str, Any]) -> None:
        self.counters["deepyard_job_failures"].labels(**self.job, cause=event["cause"]).inc()
        if event["cause"] == "checkpoint":
            self.counters["deepyard_checkpoint_save_failures"].labels(**self.job).inc()
        if event.get("retry"):
            self.counters["deepyard_job_restarts"].labels(**self.job).inc()
            self.set_state("recovering")

    def _on_recovered(self, event: dict[str, Any]) -> None:
        self.histograms["deepyard_job_recovery_duration_seconds"].labels(**self.job).observe(
            event["first_step_s"]
        )
        self.counters["deepyard_job_steps_redone"].labels(**self.job).inc(event["steps_redone"])


def _node_ip() -> str:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("10.255.255.255", 1))
            return str(probe.getsockname()[0])
        except OSError:
            return "127.0.0.1"
