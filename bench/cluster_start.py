"""Submission to first training step: a job submitted to a 2-node Ray cluster against the
same job run embedded with `deepyard run`, in one run.

  (a) run:     `deepyard run JOB` — an embedded local Ray, started and stopped by the job
  (b) submit:  `deepyard submit JOB` to a running 2-node cluster on 127.0.0.1 (token auth,
               `ray start --head` + `ray start --address`, as deepyard.testing.cluster
               starts them); the job's entrypoint runs `deepyard run --address auto` there
  (c) spread:  (b) with `resources.placement=SPREAD`: one worker on each node

Each run's clock starts just before its command starts; its first step is the time step 1
ended: the first row of the run's history.parquet (the job writes it on this machine,
cluster or not). Prints a table, writes bench/out/cluster_start.json.

Usage: .venv/bin/python bench/cluster_start.py [--repeats R] [--job JOB] [--steps N]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
from rich.console import Console
from rich.table import Table

from deepyard.testing.cluster import LocalCluster

ROOT = Path(__file__).resolve().parent.parent
DEEPYARD = [sys.executable, "-m", "deepyard.cli.main"]
Result = dict[str, Any]


def env_for(cluster: LocalCluster | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_ADDRESS", "RAY_AUTH"))}
    env.update(RAY_USAGE_STATS_ENABLED="0", GLOO_SOCKET_IFNAME="lo", PYTHONUNBUFFERED="1")
    if cluster is not None:
        env.update(DEEPYARD_ADDRESS=cluster.address, RAY_AUTH_TOKEN=cluster.token)
    return env


def first_step(out: Path, timeout_s: float) -> tuple[float, Result]:
    """Step 1's event time and the run's phases (`startup_s`), once the run has finished."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for summary in out.glob("*/*/summary.json"):
            history = pq.read_table(summary.parent / "history.parquet", columns=["step", "t"])
            assert history.column("step")[0].as_py() == 1
            first = float(history.column("t")[0].as_py())
            return first, json.loads(summary.read_text()).get("startup_s", {})
        time.sleep(0.5)
    raise TimeoutError(f"no finished run under {out} within {timeout_s:.0f} s")


def one(kind: str, job: str, steps: int, cluster: LocalCluster | None, timeout_s: float) -> Result:
    out = Path(tempfile.mkdtemp(prefix=f"dy-bench-{kind}-"))
    sets = [f"training.max_steps={steps}", "training.epochs=null", f"output_dir={out}"]
    if kind == "spread":
        sets.append("resources.placement=SPREAD")
    args = [arg for item in sets for arg in ("--set", item)]
    command = [*DEEPYARD, "run" if kind == "run" else "submit", job, *args]
    started = time.time()
    proc = subprocess.run(
        command, capture_output=True, text=True, env=env_for(cluster), timeout=timeout_s
    )
    returned = time.time()
    if proc.returncode != 0:
        raise RuntimeError(f"{kind}: exit {proc.returncode}\n{proc.stderr[-3000:]}")
    step_t, phases = first_step(out, timeout_s)
    return {
        "kind": kind,
        "command_s": round(returned - started, 3),
        "to_first_step_s": round(step_t - started, 3),
        "startup_s": phases,
    }


def phase_table(runs: list[Result]) -> Table:
    """Median seconds per start-up phase; "before the job's process" is what the Jobs API
    adds before `deepyard run` starts on the cluster (upload, job supervisor, runtime env),
    or for `run` the interpreter's start."""
    kinds = ("run", "submit", "spread")
    table = Table(title="where the time goes (median seconds per phase)")
    table.add_column("phase")
    for kind in kinds:
        table.add_column(kind)
    names = list(dict.fromkeys(name for r in runs for name in r["startup_s"]))
    for name in ["before the job's process", *names]:
        cells = []
        for kind in kinds:
            mine = [r for r in runs if r["kind"] == kind]
            if name == "before the job's process":
                values = [r["to_first_step_s"] - sum(r["startup_s"].values()) for r in mine]
            else:
                values = [r["startup_s"].get(name, 0.0) for r in mine]
            cells.append(f"{statistics.median(values):.2f}")
        table.add_row(name, *cells)
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--job", default=str(ROOT / "jobs/examples/digits_cnn.yaml"))
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=300)
    args = parser.parse_args(argv)
    console = Console(stderr=True)
    runs: list[Result] = []
    cluster = LocalCluster(cpus=2)
    try:
        cluster.start_node(0)
        cluster.start_node(1)
        cluster.wait_for_nodes(2)
        for repeat in range(args.repeats):  # interleaved: drift hits every kind alike
            for kind in ("run", "submit", "spread"):
                target = None if kind == "run" else cluster
                result = one(kind, args.job, args.steps, target, args.timeout)
                console.print(f"repeat {repeat + 1} {kind}: {result['to_first_step_s']:.1f} s")
                runs.append(result)
    finally:
        cluster.stop()
    medians = {
        kind: statistics.median(r["to_first_step_s"] for r in runs if r["kind"] == kind)
        for kind in ("run", "submit", "spread")
    }
    table = Table(title="command start → first training step (median of repeats)")
    for column in ("what", "to first step (s)", "command returns (s)", "vs run"):
        table.add_column(column)
    for kind, label in (
        ("run", "deepyard run (embedded Ray)"),
        ("submit", "deepyard submit (2-node cluster, PACK)"),
        ("spread", "deepyard submit (2-node cluster, SPREAD)"),
    ):
        command = statistics.median(r["command_s"] for r in runs if r["kind"] == kind)
        table.add_row(
            label, f"{medians[kind]:.1f}", f"{command:.1f}", f"{medians[kind] / medians['run']:.2f}"
        )
    Console().print(table)
    Console().print(phase_table(runs))
    result = {
        "job": args.job,
        "steps": args.steps,
        "cpus": os.cpu_count(),
        "medians_to_first_step_s": medians,
        "ratio_submit_run": round(medians["submit"] / medians["run"], 3),
        "runs": runs,
    }
    out = ROOT / "bench" / "out"
    out.mkdir(parents=True, exist_ok=True)
    (out / "cluster_start.json").write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
