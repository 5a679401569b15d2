"""Wall time of evaluation with a GPT cut into 2 pipeline stages, under torchrun.

Trains the 4-block, 32-wide GPT of tests/integration/test_model_parallel.py
(deepyard.testing.jobs.small_gpt_job) in 2 stages (2 ranks, gloo, ZeRO-1) for a few
steps on generated sentences and evaluates it after every step on an eval split of
`--eval-rows` rows. An evaluation's wall time is the time from its step's history row
to its eval event (the loop evaluates right after the step is logged). Prints each
evaluation's seconds, their median and minimum (on a shared machine the minimum is the
least disturbed) and the eval loss; results go to bench/out/pipeline_eval.json.

Usage: PYTHONPATH=platform .venv/bin/python bench/pipeline_eval.py [--eval-rows 512]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq

from deepyard.testing import torchrun
from deepyard.testing.jobs import small_gpt_job

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out"
OVERRIDES = (
    "parallelism.pipeline=2",
    "training.eval_every_steps=1",
    "checkpoint.every_steps=1000",  # a checkpoint at the end only
)


def _eval_seconds(run_dir: Path) -> list[float]:
    history = pq.read_table(run_dir / "history.parquet").to_pydict()
    step_t = dict(zip(history["step"], history["t"], strict=True))
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    evals = [e for e in events if e.get("type") == "eval"]
    seen: set[int] = set()
    seconds = []
    for event in evals:  # the first evaluation of each step (the last step is scored twice)
        if event["step"] in step_t and event["step"] not in seen:
            seen.add(event["step"])
            seconds.append(event["t"] - step_t[event["step"]])
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--eval-rows", type=int, default=512)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--label", default="")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        spec = small_gpt_job(root, 128, args.eval_rows, args.steps)
        argv = torchrun.command(spec, root / "out", *OVERRIDES, workers=2)
        started = time.perf_counter()
        run = torchrun.execute(argv, timeout=900)
        wall = time.perf_counter() - started
        if run.code != 0:
            raise SystemExit(run.stderr[-3000:])
        seconds = _eval_seconds(run.run_dir)
    result = {
        "label": args.label,
        "eval_rows": args.eval_rows,
        "eval_s": [round(s, 3) for s in seconds],
        "median_eval_s": round(statistics.median(seconds), 3),
        "min_eval_s": round(min(seconds), 3),  # the least disturbed by other load
        "eval_loss": run.summary["eval"]["loss"],
        "wall_s": round(wall, 1),
    }
    OUT.mkdir(parents=True, exist_ok=True)
    with (OUT / "pipeline_eval.json").open("a") as out:
        out.write(json.dumps(result) + "\n")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
