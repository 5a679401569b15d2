"""Run the training loop without Ray: `torchrun --nproc-per-node 2 -m deepyard.train --spec J`.

The same loop `deepyard run` drives on Ray workers; rank 0 records the run (summary.json,
history.parquet) and logs progress lines. Used by the GPU check, benchmarks and tests.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from deepyard import spec as specs
from deepyard.data import resolve_sources
from deepyard.errors import DeepyardError
from deepyard.telemetry.session import command_start_time, open_run
from deepyard.train.dist import WorkerContext
from deepyard.train.loop import Sources, train


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

    result = train(spec, Sources(train_uri, eval_uri), ctx, emit)
    if session is not None:
        session.display.close()
        summary = session.recorder.finish(result, "succeeded")
        if args.json:
            print(json.dumps(summary, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
