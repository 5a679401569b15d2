"""Run the training loop without Ray: `torchrun --nproc-per-node 2 -m deepyard.train --spec J`.

The same loop `deepyard run` drives on Ray workers; rank 0 records the run (summary.json,
history.parquet) and logs progress lines. Used by the GPU check, benchmarks and tests.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

import torch

from deepyard import spec as specs
from deepyard.data import resolve_sources
from deepyard.errors import DeepyardError
from deepyard.launch.attempts import open_lineage, plan_attempt
from deepyard.telemetry import result_line
from deepyard.telemetry.session import command_start_time, open_run
from deepyard.train.dist import WorkerContext, init_process_group
from deepyard.train.loop import Sources, train
from deepyard.train.plan import AttemptPlan


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deepyard.train", description=__doc__)
    parser.add_argument("--spec", required=True, type=Path, help="job spec YAML file")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="override a spec field by dotted path",
    )
    parser.add_argument("--json", action="store_true", help="print the summary JSON on stdout")
    parser.add_argument(
        "--restart", action="store_true", help="start a new checkpoint lineage instead of resuming"
    )
    args = parser.parse_args(argv)

    started_at = command_start_time()
    ctx = WorkerContext.from_env()
    try:
        spec = specs.load(args.spec, args.overrides)
        train_uri, eval_uri = resolve_sources(spec.data)
    except DeepyardError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    session = open_run(spec, started_at) if ctx.rank == 0 else None

    def emit(event: dict) -> None:
        if session is not None:
            session.emit(event)

    # torchrun forwards SIGTERM to every worker: checkpoint at the next step, then exit.
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        plan = _plan(spec, ctx, args.restart, session)
    except DeepyardError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    result = train(spec, Sources(train_uri, eval_uri), ctx, emit, plan, stop)
    if session is not None:
        preempted = result.get("outcome") == "preempted"
        summary = session.finish(result, "preempted" if preempted else "succeeded")
        session.display.note(result_line(summary))
        if args.json:
            print(json.dumps(summary, default=float))
        return 143 if preempted else 0
    return 0


def _plan(spec: specs.JobSpec, ctx: WorkerContext, restart: bool, session: Any) -> AttemptPlan:
    """Rank 0 picks the lineage and checkpoint; every rank gets the same plan."""
    init_process_group(ctx, spec.resources.cpus_per_worker, spec.resources.gpus_per_worker)
    plan: list[Any] = [None]
    if ctx.rank == 0:
        lineage = open_lineage(spec, restart)
        # The torchrun agent forwards SIGTERM to all workers: `sigterm` faults go to it.
        plan[0] = plan_attempt(
            spec, 1, lineage, session.recorder.run_id, session.display.note, os.getppid()
        )
    if ctx.world_size > 1:
        torch.distributed.broadcast_object_list(plan, src=0)
    assert isinstance(plan[0], AttemptPlan)
    return plan[0]


if __name__ == "__main__":
    sys.exit(main())
