"""GPU jobs on Ray: each worker of a node gets its own GPU from Ray, sees its node's gang
GPUs (NCCL peers) and drives its own; a GPU job on nodes without CUDA fails at once with
the fix, instead of training on CPU behind the user's back.

The session's Ray declares 2 GPUs on this CPU machine: Ray assigns GPU ids and
CUDA_VISIBLE_DEVICES exactly as on a GPU node; only CUDA itself is missing.
"""

from __future__ import annotations

from typing import Any

import pytest
import ray

from deepyard.errors import SpecError
from deepyard.launch.local import JobRunner
from deepyard.launch.placement import contexts
from deepyard.launch.workers import WorkerGroup

pytestmark = pytest.mark.integration


def test_two_gpu_workers_on_one_node_get_distinct_gpus(ray_session: None, digits_job: Any) -> None:
    spec, _ = digits_job("resources.gpus_per_worker=1", "resources.cpus_per_worker=1")
    events: list[dict[str, Any]] = []
    group = WorkerGroup(spec, events.append, print, queue=False)
    try:
        group.start()
        addresses = ray.get([actor.address.remote() for actor in group.actors])
    finally:
        group.stop()
    assert sorted(a.gpu_ids for a in addresses) == [("0",), ("1",)]
    ranks = contexts(addresses)
    assert [c.visible_devices for c in ranks] == ["0,1", "0,1"]
    assert sorted(c.device_index for c in ranks) == [0, 1]
    assert [c.local_rank for c in ranks] == [0, 1]


def test_a_gpu_job_on_nodes_without_cuda_fails_with_the_fix(
    ray_session: None, digits_job: Any
) -> None:
    spec, sources = digits_job("resources.gpus_per_worker=1", "failure.max_restarts=2")
    events: list[dict[str, Any]] = []
    runner = JobRunner(spec, sources, events.append, print, "gpu-check")
    with pytest.raises(SpecError, match=r"gpus_per_worker=1, but rank \d .* no CUDA device"):
        runner.run()
    # The user's mistake is not retried: one attempt, no restarts spent on it.
    failed = [e for e in events if e["type"] == "attempt_failed"]
    assert [(e["attempt"], e["retry"]) for e in failed] == [(1, False)]
