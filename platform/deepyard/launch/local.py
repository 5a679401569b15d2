"""Run a job from this process: an embedded local Ray (or `--address` of a running one).

The driver owns the lifecycle: start Ray if it has to, start the worker gang, stream
events, and on success, failure or Ctrl-C stop every worker and the Ray it started.
A failed attempt is retried from the newest checkpoint while `failure.max_restarts`
allows (launch/attempts.py decides).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ray
from ray.util.placement_group import PlacementGroup

from deepyard.errors import DeepyardError
from deepyard.launch.attempts import (
    Attempts,
    FailurePolicy,
    failure_cause,
    open_lineage,
    plan_attempt,
)
from deepyard.launch.workers import OnEvent, WorkerGroup
from deepyard.spec import JobSpec
from deepyard.telemetry.record import new_run_id
from deepyard.train.loop import Sources


def connect(spec: JobSpec, address: str | None) -> bool:
    """Join `address`, or start an embedded Ray sized for the job. True if we started it."""
    if ray.is_initialized():
        return False
    common: dict[str, Any] = {"logging_level": logging.WARNING, "log_to_driver": True}
    if address:
        ray.init(address=address, **common)
        return False
    res = spec.resources
    ray.init(
        # "local": a new embedded Ray even when another runs on this machine (never join
        # someone's cluster unasked; --address does that).
        address="local",
        # data.engine=ray runs Ray Data tasks beside the workers: leave them CPUs to run on.
        num_cpus=max(os.cpu_count() or 1, res.num_workers * res.cpus_per_worker)
        + (2 if spec.data.engine == "ray" else 0),
        include_dashboard=False,
        # Secure by default: the embedded cluster, and the workers' gloo rendezvous with
        # it, listen on loopback only.
        _node_ip_address="127.0.0.1",
        **common,
    )
    return True


class JobRunner:
    """Runs a job's attempts on Ray until it finishes, is preempted or runs out of restarts.

    `request_stop()` (SIGTERM, preemption) may be called from a signal handler at any time.
    """

    def __init__(
        self,
        spec: JobSpec,
        sources: Sources,
        on_event: OnEvent,
        wait_note: Callable[[str], None],
        run_id: str,
        restart: bool = False,
        log_dir: Path | None = None,
        placement: PlacementGroup | None = None,
        hold_after_eval: bool = False,
    ) -> None:
        self.spec, self.sources, self.run_id, self.restart = spec, sources, run_id, restart
        self.hold_after_eval = hold_after_eval  # a PBT trial (launch/hold.py)
        self.log_dir, self.placement = log_dir, placement
        self.on_event, self.wait_note = on_event, wait_note
        self.attempts = Attempts()
        self.group: WorkerGroup | None = None
        self.stop_requested = False
        self.embedded = False  # we started Ray: this job is its only one, no queue to keep
        self.nodes: list[str] = []  # the Ray nodes the current attempt's ranks run on
        self.lost_from: list[str] = []  # ... and the last failed attempt's

    def _sigterm(self, signum: int, frame: Any) -> None:
        self.request_stop()

    def request_stop(self) -> None:
        """Preemption (SIGTERM): checkpoint at the next step boundary and return."""
        self.stop_requested = True
        if self.group is not None:
            self.group.request_stop()

    def run(self, address: str | None = None) -> dict[str, Any]:
        """Rank 0's summary plus the attempts record. Raises DeepyardError on failure.

        Kubernetes preempts with SIGTERM and a grace period: on SIGTERM the job checkpoints
        at the next step boundary and returns with outcome "preempted".
        """
        original = _on_sigterm(self._sigterm)  # ray.init takes seconds: cover it too
        started = False
        try:
            started = self.embedded = connect(self.spec, address)
            _on_sigterm(self._sigterm)  # ray.init installed its own handler over ours
            self.on_event({"type": "phase", "name": "ray_ready", "t": time.time()})
            policy = FailurePolicy(self.spec.failure.max_restarts)
            lineage = open_lineage(self.spec, self.restart)
            while True:
                try:
                    return {**self._attempt(lineage), **self.attempts.summary()}
                except DeepyardError as exc:
                    retry = not self.stop_requested and policy.decide(exc, self.attempts.attempt)
                    self.on_event(
                        {
                            "type": "attempt_failed",
                            "attempt": self.attempts.attempt,
                            "cause": failure_cause(exc),
                            "message": str(exc).splitlines()[0],
                            "retry": retry,
                            "t": time.time(),
                        }
                    )
                    if not retry:
                        raise
                    self.attempts.failed(exc)
                    self.lost_from = self.nodes
                    self.wait_note(
                        f"attempt {self.attempts.attempt - 1} failed: {str(exc).splitlines()[0]}"
                        f"; restarting (attempt {self.attempts.attempt} of "
                        f"{policy.max_restarts + 1}) from the newest checkpoint"
                    )
        finally:
            _on_sigterm(original)
            if started:
                ray.shutdown()

    def _attempt(self, lineage: str | None) -> dict[str, Any]:
        plan = plan_attempt(
            self.spec, self.attempts.attempt, lineage, self.run_id, self.wait_note, os.getpid()
        )
        plan = dataclasses.replace(plan, hold_after_eval=self.hold_after_eval)
        self.group = WorkerGroup(
            self.spec,
            self._observe,
            self.wait_note,
            self.placement,
            queue=not self.embedded,
            lost_from=self.lost_from,
        )
        self.group.stop_requested = self.stop_requested
        try:
            self.group.start()
            return self.group.run(self.sources, plan)
        finally:
            if self.group.hang_report:
                self._log_stacks(self.group.hang_report)
            self.group.stop()

    def _log_stacks(self, report: str) -> None:
        name = f"stacks-attempt-{self.attempts.attempt}.txt"
        if self.log_dir is None:
            print(report, file=sys.stderr)
            return
        (self.log_dir / name).write_text(report + "\n")
        self.wait_note(f"hung: every rank's Python stack is in {self.log_dir / name}")

    def _observe(self, event: dict[str, Any]) -> None:
        if event.get("type") == "workers":
            self.nodes = list(event["nodes"])
        recovered = self.attempts.observe(event)
        self.on_event({**event, "attempt": self.attempts.attempt})
        if recovered is not None:
            self.on_event({"type": "recovered", **recovered, "t": time.time()})


def _on_sigterm(handler: Any) -> Any:
    """Install a SIGTERM handler (main thread only); returns the previous one."""
    if threading.current_thread() is not threading.main_thread() or handler is None:
        return None
    return signal.signal(signal.SIGTERM, handler)


def run_job(
    spec: JobSpec,
    sources: Sources,
    on_event: OnEvent,
    wait_note: Callable[[str], None],
    address: str | None = None,
) -> dict[str, Any]:
    """Train `spec` on Ray; returns rank 0's summary. Raises DeepyardError on failure."""
    return JobRunner(spec, sources, on_event, wait_note, new_run_id()).run(address)
