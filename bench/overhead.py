"""What deepyard's Ray launch costs: the same job trained three ways, in one run.

  (a) bare:     one process, plain torch AdamW, no DeepSpeed, no Ray (--bare-threads, 2)
  (b) torchrun: `torchrun -m deepyard.train` — the workers' DeepSpeed loop without Ray
  (c) deepyard: `deepyard run` — the same loop on Ray actors of an embedded local Ray

Same model, Parquet data, global batch and step count in each. Prints a table and writes
bench/out/overhead.json. Usage: .venv/bin/python bench/overhead.py [--steps N] [--repeats R]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import torch
import torch.nn.functional as F
from rich.console import Console
from rich.table import Table

from deepyard import models
from deepyard import spec as specs
from deepyard.data import ParquetLoader, ParquetSource, resolve_sources
from deepyard.train.dist import free_port
from deepyard.train.engine import build_optimizer, build_scheduler

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
GOAL_RATIO = 0.95  # deepyard samples/s over torchrun samples/s
GOAL_FIRST_STEP_S = 20.0  # deepyard, command start to first training step
METRICS = ("samples_per_s", "train_time_s", "launch_to_first_step_s", "time_to_first_step_s")
Result = dict[str, Any]
warnings.filterwarnings("ignore", message="The given NumPy array is not writable")  # read-only


def local_env() -> dict[str, str]:
    """Subprocess environment: an embedded Ray and gloo on 127.0.0.1 only, no usage stats."""
    env = dict(os.environ)
    env.pop("RAY_ADDRESS", None)  # never join someone else's cluster
    env.update(
        RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0",  # Ray's node IP becomes 127.0.0.1
        RAY_USAGE_STATS_ENABLED="0",
        GLOO_SOCKET_IFNAME="lo",
        PYTHONUNBUFFERED="1",
    )
    return env


def bare_loop(spec: specs.JobSpec, steps: int, threads: int) -> Result:
    """(a) The floor: the job's model and data in a plain single-process torch loop."""
    torch.set_num_threads(threads)
    train_uri, _ = resolve_sources(spec.data)
    source = ParquetSource(train_uri, spec.data.features, spec.data.label)
    torch.manual_seed(spec.training.seed)
    model = models.build(spec.model.name, spec.model.args, source.input_shape, source.num_classes)
    optimizer = build_optimizer(spec, model)  # torch AdamW (or SGD) with the job's settings
    scheduler = build_scheduler(spec, optimizer, steps)
    batch = spec.global_batch_size  # = workers x per-worker batch: same samples per step
    batches = ParquetLoader(source, 0, 1, batch, seed=spec.training.seed, shuffle=spec.data.shuffle)
    times: list[float] = []
    loss = 0.0
    for _ in range(steps):
        started = time.perf_counter()
        inputs, labels = batches.next_batch()
        out = F.cross_entropy(model(inputs), labels)
        optimizer.zero_grad(set_to_none=True)
        out.backward()
        if spec.optimizer.grad_clip is not None:  # DeepSpeed clips too (gradient_clipping)
            torch.nn.utils.clip_grad_norm_(model.parameters(), spec.optimizer.grad_clip)
        optimizer.step()
        scheduler.step()
        loss = out.item()
        times.append(time.perf_counter() - started)
    steady = times[1:] or times  # the first step carries one-off warm-up, as in deepyard
    return {
        "steps": steps,
        "samples_per_s": round(batch * len(steady) / sum(steady), 2),
        "train_time_s": round(sum(times), 3),
        "final_loss": loss,
    }


def launch(cmd: list[str], log: Path, timeout_s: float) -> Result:
    """Run a command that prints a deepyard summary JSON; add launch → first-step seconds."""
    name, launched = log.stem, time.time()
    with log.open("w") as err:
        proc = subprocess.Popen(
            cmd, cwd=ROOT, env=local_env(), stdout=subprocess.PIPE, stderr=err, text=True
        )
        try:
            stdout, _ = proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGINT)  # both stop their workers (and Ray) on Ctrl-C
            try:
                proc.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate()
            sys.exit(f"{name} ran past {timeout_s:.0f} s; its log: {log}")
    if proc.returncode != 0:
        sys.exit(f"{name} failed with exit code {proc.returncode}; its log: {log}")
    summary = last_json(stdout, name, log)
    history = pq.read_table(Path(summary["run_dir"]) / "history.parquet", columns=["t"])
    # The first step's event time is when step 1 finished (as the summary's first_step).
    summary["launch_to_first_step_s"] = round(history.column("t")[0].as_py() - launched, 3)
    return summary


def last_json(stdout: str, name: str, log: Path) -> Result:
    for line in reversed(stdout.splitlines()):
        if line.startswith("{"):
            try:
                found: Result = json.loads(line)
                return found
            except json.JSONDecodeError:
                continue
    sys.exit(f"{name} printed no summary JSON on stdout; its log: {log}")


def median(runs: list[Result]) -> Result:
    """Median of each metric (and of each start-up phase) over the repeats."""
    out: Result = {k: statistics.median(r[k] for r in runs) for k in METRICS if k in runs[0]}
    if "startup_s" in runs[0]:
        names = list(runs[0]["startup_s"])
        out["startup_s"] = {
            n: statistics.median(r["startup_s"].get(n, 0.0) for r in runs) for n in names
        }
    return out


def render(result: Result, console: Console) -> None:
    m = result["median"]
    bare, tr, dy = m["bare"], m["torchrun"], m["deepyard"]
    title = f"{result['job']} · {result['steps']} steps · median of {result['repeats']}"
    table = Table(title=title)
    for col in ("run", "samples/s", "vs bare", "launch → step 1 (s)", "its ttfs (s)"):
        table.add_column(col, justify="left" if col == "run" else "right")

    def fmt(value: float | None, digits: int = 1) -> str:
        return "-" if value is None else f"{value:.{digits}f}"

    for name, r in (
        ("(a) bare torch", bare),
        ("(b) torchrun", tr),
        ("(c) deepyard run", dy),
    ):
        table.add_row(
            name,
            fmt(r["samples_per_s"]),
            fmt(r["samples_per_s"] / bare["samples_per_s"], 2),
            fmt(r.get("launch_to_first_step_s")),
            fmt(r.get("time_to_first_step_s")),
        )
    console.print(table)

    phases = Table(title="start-up phases (s since the previous one)")
    for col in ("phase", "deepyard", "torchrun"):
        phases.add_column(col, justify="left" if col == "phase" else "right")
    for name in dict.fromkeys([*dy["startup_s"], *tr["startup_s"]]):
        phases.add_row(name, fmt(dy["startup_s"].get(name), 2), fmt(tr["startup_s"].get(name), 2))
    console.print(phases)

    ratio, first = result["ratio_deepyard_torchrun"], dy["launch_to_first_step_s"]
    ok = {True: "[green]ok[/]", False: "[red]MISSED[/]"}
    console.print(
        f"deepyard/torchrun samples/s: {ratio:.3f} (goal >= {GOAL_RATIO}) {ok[ratio >= GOAL_RATIO]}"
    )
    console.print(
        f"deepyard command → first step: {first:.1f} s (goal < {GOAL_FIRST_STEP_S:g} s) "
        f"{ok[first < GOAL_FIRST_STEP_S]}; torchrun: {tr['launch_to_first_step_s']:.1f} s"
    )
    short = [n for n in ("bare", "torchrun", "deepyard") if m[n]["train_time_s"] < 10]
    if short:
        console.print(
            f"[yellow]note[/]: under 10 s of training for {', '.join(short)}; "
            "raise --steps for a steadier figure"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--job", type=Path, default=ROOT / "jobs/examples/digits_cnn.yaml")
    parser.add_argument("--steps", type=int, default=600, help="optimizer steps per run")
    parser.add_argument("--repeats", type=int, default=1, help="runs of each; median reported")
    parser.add_argument("--bare-threads", type=int, default=2, help="torch threads in (a)")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per subprocess")
    parser.add_argument("--out", type=Path, default=ROOT / "bench/out/overhead.json")
    args = parser.parse_args(argv)
    logs = args.out.parent / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    job = str(args.job.resolve())
    console = Console(stderr=True)
    runs: dict[str, list[Result]] = {"bare": [], "torchrun": [], "deepyard": []}
    with tempfile.TemporaryDirectory(prefix="deepyard-bench-") as tmp:
        sets = [f"training.max_steps={args.steps}", "training.epochs=null", f"output_dir={tmp}"]
        spec = specs.load(job, sets)
        tail = [job, "--json", *(arg for s in sets for arg in ("--set", s))]
        for i in range(args.repeats):  # interleaved, so slow spells hit every variant
            console.print(f"repeat {i + 1}/{args.repeats}: (a) bare torch loop ...")
            runs["bare"].append(bare_loop(spec, args.steps, args.bare_threads))
            console.print(f"repeat {i + 1}/{args.repeats}: (b) torchrun ...")
            rdzv = f"--master-addr 127.0.0.1 --master-port {free_port()}".split()
            workers = ["--nproc-per-node", str(spec.resources.num_workers)]
            cmd = [str(BIN / "torchrun"), *workers, *rdzv, "-m", "deepyard.train", "--spec", *tail]
            runs["torchrun"].append(launch(cmd, logs / f"torchrun-{i}.log", args.timeout))
            console.print(f"repeat {i + 1}/{args.repeats}: (c) deepyard run ...")
            cmd = [str(BIN / "deepyard"), "run", *tail]
            runs["deepyard"].append(launch(cmd, logs / f"deepyard-{i}.log", args.timeout))
    med = {name: median(rs) for name, rs in runs.items()}
    result: Result = {
        "job": str(args.job),
        "steps": args.steps,
        "repeats": args.repeats,
        "global_batch_size": spec.global_batch_size,
        "workers": spec.resources.num_workers,
        "bare_threads": args.bare_threads,
        "ratio_deepyard_torchrun": round(
            med["deepyard"]["samples_per_s"] / med["torchrun"]["samples_per_s"], 4
        ),
        "notes": {
            "launch_to_first_step_s": "from this script starting the command to the end of "
            "training step 1 (rank 0's step event)",
            "time_to_first_step_s": "the run's own figure: from rank 0's process creation; "
            "for torchrun that is the worker process torchrun spawns, not torchrun itself",
        },
        "machine": {"cpus": os.cpu_count(), "host": platform.node(), "torch": torch.__version__},
        "median": med,
        "runs": runs,
    }
    args.out.write_text(json.dumps(result, indent=2, default=float) + "\n")
    render(result, Console())
    console.print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
