"""What ASHA saves, and what the sweep machinery costs, measured in one run.

  (1) The same sweep twice, same seed, so the same trial configs: fifo (random search,
      every trial runs to the end) and ASHA. Real 2-worker DeepSpeed trials of the digits
      CNN. Prints each one's best accuracy and worker-hours, and the ratios.
      Goal: ASHA within 1 point of random's best at <= 40% of its worker-hours.
  (2) Scheduling overhead: N trivial trials (report once, return) through `SweepRunner`
      (journaled searcher, budget ledger, status monitor) vs bare `tune.run` with Tune's
      own random search, same Ray. Prints trials/s of each.

Writes bench/out/sweep.json.
Usage: .venv/bin/python bench/sweep.py [--trials 8] [--steps 1200] [--trivial 100]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from deepyard.spec.sweep_load import load_sweep_text
from deepyard.sweep.runner import SweepRunner

ROOT = Path(__file__).resolve().parent.parent
GOAL_POINTS = 0.01  # ASHA's best within 1 point of random's
GOAL_COMPUTE = 0.40  # at no more than 40% of random's worker-hours

SWEEP = """\
name: {name}
job: {job}
job_overrides:
  training.epochs: null
  training.max_steps: {steps}
  training.eval_every_steps: 50
  training.log_every_steps: 100
space:
  optimizer.lr: {{type: loguniform, low: 1.0e-5, high: 3.0e-2}}
  model.args.width: {{type: choice, values: [8, 16]}}
  model.args.dropout: {{type: uniform, low: 0.0, high: 0.3}}
scheduler: {scheduler}
metric: accuracy
seed: 3
budget: {{max_trials: {trials}, max_concurrent: 1}}
output_dir: {out}
"""


def run_sweep(name: str, scheduler: str, args: argparse.Namespace, out: Path) -> dict[str, Any]:
    text = SWEEP.format(
        name=name,
        job=ROOT / "jobs" / "examples" / "digits_cnn.yaml",
        steps=args.steps,
        scheduler=scheduler,
        trials=args.trials,
        out=out,
    )
    sweep = load_sweep_text(text, "bench-sweep.yaml", base_dir=ROOT)
    started = time.perf_counter()
    summary = SweepRunner(sweep, Console(stderr=True)).run()
    return {**summary, "wall_s": round(time.perf_counter() - started, 1)}


def trivial_trials(n: int, out: Path) -> dict[str, float]:
    """Trials/s for n trials that report once: ours vs bare Tune, in one Ray."""
    import ray
    from ray import tune

    def trial(config: dict[str, Any]) -> None:
        tune.report({"accuracy": config["optimizer.lr"], "step": 1})

    ray.init(
        address="local",
        num_cpus=os.cpu_count() or 2,
        include_dashboard=False,
        logging_level=logging.ERROR,
    )
    try:
        text = SWEEP.format(
            name="trivial",
            job=ROOT / "jobs" / "examples" / "digits_cnn.yaml",
            steps=100,
            scheduler="fifo",
            trials=n,
            out=out,
        ).replace("max_concurrent: 1", "max_concurrent: 2")
        sweep = load_sweep_text(text, "bench-sweep.yaml", base_dir=ROOT)
        started = time.perf_counter()
        SweepRunner(sweep, Console(stderr=True, quiet=True), trainable=trial).run()
        ours = n / (time.perf_counter() - started)

        started = time.perf_counter()
        tune.run(
            trial,
            config={"optimizer.lr": tune.loguniform(1e-5, 3e-2)},
            num_samples=n,
            max_concurrent_trials=2,
            storage_path=str(out / "bare"),
            metric="accuracy",
            mode="max",
            verbose=0,
        )
        bare = n / (time.perf_counter() - started)
    finally:
        ray.shutdown()
    return {"deepyard_trials_per_s": round(ours, 2), "bare_tune_trials_per_s": round(bare, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--steps", type=int, default=1200)
    parser.add_argument("--trivial", type=int, default=100)
    args = parser.parse_args()
    console = Console()
    with tempfile.TemporaryDirectory(prefix="deepyard-bench-sweep-") as tmp:
        out = Path(tmp)
        random = run_sweep("random", "fifo", args, out)
        asha = run_sweep(
            "asha", "{name: asha, grace_period_steps: 50, reduction_factor: 3}", args, out
        )
        overhead = trivial_trials(args.trivial, out)

    best_random, best_asha = random["best"]["accuracy"], asha["best"]["accuracy"]
    compute = asha["worker_hours"] / random["worker_hours"]
    result = {
        "machine": f"{platform.node()} {os.cpu_count()} CPUs",
        "trials": args.trials,
        "steps": args.steps,
        "random": {k: random[k] for k in ("worker_hours", "wall_s", "by_state")}
        | {"best_accuracy": best_random},
        "asha": {k: asha[k] for k in ("worker_hours", "wall_s", "by_state")}
        | {"best_accuracy": best_asha},
        "asha_best_minus_random_best": round(best_asha - best_random, 4),
        "asha_compute_fraction": round(compute, 3),
        "goal_met": best_asha >= best_random - GOAL_POINTS and compute <= GOAL_COMPUTE,
        "trivial_trials": args.trivial,
        **overhead,
    }
    table = Table("search", "best accuracy", "worker-hours", "wall s", "trials by state")
    for name, run in (("random (fifo)", random), ("asha", asha)):
        table.add_row(
            name,
            f"{run['best']['accuracy']:.4f}",
            f"{run['worker_hours']:.4f}",
            f"{run['wall_s']:.0f}",
            json.dumps(run["by_state"]),
        )
    console.print(table)
    console.print(
        f"ASHA: best {result['asha_best_minus_random_best']:+.4f} vs random at "
        f"{compute:.1%} of its worker-hours (goal: >= -{GOAL_POINTS} at <= {GOAL_COMPUTE:.0%})"
    )
    console.print(
        f"{args.trivial} trivial trials: deepyard {overhead['deepyard_trials_per_s']} trials/s, "
        f"bare Tune {overhead['bare_tune_trials_per_s']} trials/s"
    )
    path = ROOT / "bench" / "out" / "sweep.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(result, indent=1))
    console.print(f"written: {path}")


if __name__ == "__main__":
    main()
