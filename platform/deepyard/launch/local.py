"""Run a job from this process: an embedded local Ray (or `--address` of a running one).

The driver owns the lifecycle: start Ray if it has to, start the worker gang, stream
events, and on success, failure or Ctrl-C stop every worker and the Ray it started.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from typing import Any

import ray

from deepyard.launch.workers import OnEvent, WorkerGroup
from deepyard.spec import JobSpec
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


def run_job(
    spec: JobSpec,
    sources: Sources,
    on_event: OnEvent,
    wait_note: Callable[[str], None],
    address: str | None = None,
) -> dict[str, Any]:
    """Train `spec` on Ray; returns rank 0's summary. Raises DeepyardError on failure."""
    started = connect(spec, address)
    on_event({"type": "phase", "name": "ray_ready", "t": time.time()})
    group = WorkerGroup(spec, on_event, wait_note)
    try:
        group.start()
        return group.run(sources)
    finally:
        group.stop()
        if started:
            ray.shutdown()
