"""The GPU check: GPT-2 small through `deepyard run` against bare loops, in one call.

Five legs, one process each, interleaved so that drift hits both sides alike:

  bare-torch       bench/gpu/bare.py: PyTorch eager, fused AdamW, bf16 autocast
  bare-ds-zero1    bench/gpu/bare.py: DeepSpeed ZeRO-1 from a hand-written config
  deepyard-zero1   `python -m deepyard.cli.main run jobs/examples/gpt2_small.yaml` (the real
                   CLI: embedded local Ray, 1 worker, 1 GPU), ZeRO-1
  bare-ds-zero2    as bare-ds-zero1, ZeRO-2
  deepyard-zero2   as deepyard-zero1, ZeRO-2

All train deepyard.models.gpt.GPT (size small, 1,024 tokens a row, micro-batch 16, bf16)
on the same full rows (bench/gpu/corpus.py). Throughput is steady state: the first
`--warmup` steps are left out of every leg. For the bare loops, the window between two
device synchronisations; for deepyard, its own step events: tokens/s = tokens per step
(deepyard's own count) x steps / (time of the last step event - time of the event ending
the warm-up), so whatever the loop does between steps counts too. deepyard's own summary
figure (it leaves out only step 1, and times each step from data to loss.item(), not
what happens between steps) is reported beside it. MFU = 3 x flops_per_token x tokens/s
/ peak (989 TFLOP/s, H100 SXM bf16 dense). The goal: deepyard / bare DeepSpeed >= 0.97.

Prints a table last and writes everything to OUT/gpt2_check.json, each leg's output to
OUT/<leg>.log. Fails loudly: a missing package, no GPU, or a missing corpus stops it
before any leg; a leg that fails or runs past its time is reported and the exit code is 1.

  bash bench/gpu/run.sh                       # on the GPU machine (docs/benchmarks.md)
  .venv/bin/python bench/gpu/gpt2_check.py --smoke --out /tmp/smoke   # CPU, tiny GPT
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from importlib import metadata
from pathlib import Path
from typing import Any

import corpus  # bench/gpu/corpus.py (this script's folder is on sys.path)
import figures  # bench/gpu/figures.py
import procs  # bench/gpu/procs.py

ROOT = Path(__file__).resolve().parents[2]
JOB = ROOT / "jobs/examples/gpt2_small.yaml"
H100_BF16_PEAK = 989e12
NEEDED = ("torch", "deepspeed", "ray", "pydantic", "typer", "rich", "tokenizers", "pyarrow", "yaml")
DISTRIBUTIONS = {"yaml": "PyYAML"}
DEEPYARD_MODULES = ("deepyard.cli.main", "deepyard.launch.local", "deepyard.train.loop")
Result = dict[str, Any]


@dataclass(frozen=True)
class Settings:
    device: str  # cuda | cpu
    precision: str
    size: str  # deepyard.models.gpt preset
    seq: int
    micro_batch: int
    steps: int
    warmup: int
    cpus_per_worker: int
    gpus_per_worker: int
    leg_timeout_s: float
    peak_flops: float | None


GPU = Settings("cuda", "bf16", "small", 1024, 16, 100, 10, 8, 1, 150.0, H100_BF16_PEAK)
# The same code path on CPU: a tiny GPT, fp32, a handful of steps.
SMOKE = Settings("cpu", "fp32", "tiny", 128, 4, 8, 2, 2, 0, 240.0, None)
LEGS = ("bare-torch", "bare-ds-zero1", "deepyard-zero1", "bare-ds-zero2", "deepyard-zero2")


def preflight(settings: Settings, corpus_dir: Path) -> Result:
    """Versions of what the legs need; SystemExit naming everything missing and the fix."""
    missing, versions = [], {}
    for name in NEEDED:
        try:
            importlib.import_module(name)
            versions[name] = metadata.version(DISTRIBUTIONS.get(name, name))
        except Exception as exc:  # a broken install fails at import, not only a missing one
            missing.append(f"{name} ({type(exc).__name__}: {exc})")
    for name in DEEPYARD_MODULES:  # what the driver and the Ray worker import
        try:
            importlib.import_module(name)
        except Exception as exc:
            missing.append(f"{name} ({type(exc).__name__}: {exc}; PYTHONPATH=platform?)")
    if missing:
        raise SystemExit(
            "gpt2_check: cannot import " + "; ".join(missing) + ". Bring the wheels "
            "(bash ../shared/tools/gpu-wheels.sh .whl), carry .whl and start with "
            "bench/gpu/run.sh, which installs them (docs/benchmarks.md)"
        )
    import torch

    device_name = "cpu"
    if settings.device == "cuda":
        if not torch.cuda.is_available():
            raise SystemExit(
                f"gpt2_check: torch {torch.__version__} (CUDA {torch.version.cuda}) sees no "
                "GPU; run it on the GPU machine, or pass --smoke for the CPU smoke run"
            )
        device_name = gpu_name()
    record = corpus.check(corpus_dir, settings.steps * settings.micro_batch, settings.seq)
    return {
        "python": platform.python_version(),
        "versions": versions,
        "device_name": device_name,
        "cuda": torch.version.cuda,
        "corpus": record,
    }


def gpu_name() -> str:
    """The GPU's name from nvidia-smi: this process never creates a CUDA context, which
    would hold GPU memory through every leg."""
    try:
        found = subprocess.run(
            ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        return found.stdout.strip().splitlines()[0]
    except (OSError, subprocess.SubprocessError, IndexError):
        return "cuda (nvidia-smi gave no name)"


def job_overrides(settings: Settings, corpus_dir: Path, stage: int, runs: Path) -> list[str]:
    """`--set` overrides of jobs/examples/gpt2_small.yaml for one deepyard leg."""
    values = {
        "output_dir": str(runs),
        "data.dataset": "null",
        "data.train": str(corpus_dir / "train.parquet"),
        "data.eval": str(corpus_dir / "eval.parquet"),
        "data.tokenizer.package": "null",  # the corpus's copy: no tokenizer package needed
        "data.tokenizer.path": str(corpus_dir / "tokenizer.json"),
        "data.tokenizer.max_length": str(settings.seq),
        "data.batch_size": str(settings.micro_batch),
        "model.args.size": settings.size,
        "model.args.max_seq_len": str(settings.seq),
        "training.max_steps": str(settings.steps),
        "training.precision": settings.precision,
        "resources.cpus_per_worker": str(settings.cpus_per_worker),
        "resources.gpus_per_worker": str(settings.gpus_per_worker),
        "parallelism.zero_stage": str(stage),
    }
    return [f"{key}={value}" for key, value in values.items()]


def leg_command(name: str, settings: Settings, corpus_dir: Path, runs: Path) -> list[str]:
    stage = int(name[-1]) if name[-1].isdigit() else 0
    if name.startswith("deepyard"):
        sets = job_overrides(settings, corpus_dir, stage, runs)
        command = [sys.executable, "-m", "deepyard.cli.main", "run", str(JOB), "--json"]
        return command + [arg for item in sets for arg in ("--set", item)]
    command = [sys.executable, str(Path(__file__).parent / "bare.py"), "--corpus", str(corpus_dir)]
    command += (
        ["--loop", "torch"]
        if name == "bare-torch"
        else ["--loop", "ds", "--zero-stage", str(stage)]
    )
    return [
        *command,
        f"--device={settings.device}",
        f"--precision={settings.precision}",
        f"--size={settings.size}",
        f"--seq={settings.seq}",
        f"--micro-batch={settings.micro_batch}",
        f"--steps={settings.steps}",
        f"--warmup={settings.warmup}",
        f"--threads={settings.cpus_per_worker}",
    ]


def measure(
    name: str, settings: Settings, corpus_dir: Path, runs: Path, out: Path, timeout_s: float
) -> Result:
    runs = runs / name  # this leg's run records (deleted at the end: checkpoints are big)
    command = leg_command(name, settings, corpus_dir, runs)
    log = out / f"{name}.log"
    code, stdout, wall_s = procs.run_leg(command, ROOT, log, timeout_s)
    result: Result = {"leg": name, "wall_s": round(wall_s, 1), "log": log.name}
    with log.open("a") as end:  # a failed run's worker traceback, kept past the temp dir
        for error in sorted(runs.rglob("error.txt")):
            end.write(f"\n--- {error.name} of the run ---\n{error.read_text(errors='replace')}")
    if code != 0:
        why = f"ran past {timeout_s:.0f} s" if code is None else f"exit code {code}"
        tail = (out / f"{name}.log").read_text(errors="replace").strip().splitlines()[-5:]
        return {**result, "status": "failed", "error": f"{why}; " + " | ".join(tail)}
    summary = procs.last_json(stdout)
    if summary is None:
        return {**result, "status": "failed", "error": "printed no JSON result"}
    if not name.startswith("deepyard"):
        return {**result, "status": "ok", **summary}
    try:
        found = figures.deepyard_figures(summary, settings.steps, settings.warmup)
    except (OSError, KeyError, ValueError) as exc:
        return {**result, "status": "failed", "error": f"{type(exc).__name__}: {exc}"}
    keep = (
        "status",
        "steps",
        "time_to_first_step_s",
        "wall_time_s",
        "startup_s",
        "mfu",
        "tokens_per_s",
        "samples_per_s",
        "data_wait_fraction",
        "num_parameters",
    )
    return {**result, **found, "status": "ok", "summary": {k: summary.get(k) for k in keep}}


def config_check(settings: Settings, corpus_dir: Path, stage: int) -> Result:
    """deepyard's derived DeepSpeed config against the bare loop's hand-written one."""
    import bare  # bench/gpu/bare.py

    from deepyard import spec as specs
    from deepyard.train.engine import deepspeed_config

    spec = specs.load(JOB, job_overrides(settings, corpus_dir, stage, Path(tempfile.gettempdir())))
    derived = deepspeed_config(spec)
    written = bare.ds_config(stage, settings.micro_batch, settings.precision == "bf16")
    keys = sorted(set(derived) | set(written))
    differ = {k: [derived.get(k), written.get(k)] for k in keys if derived.get(k) != written.get(k)}
    return {"zero_stage": stage, "same": not differ, "differ_deepyard_vs_bare": differ}


def model_flops_per_token(settings: Settings, corpus_dir: Path) -> float:
    """The model's own count (GPT.flops_per_token) at the check's shape, built on no device."""
    import bare  # bench/gpu/bare.py
    import torch

    _, words = bare.vocab(corpus_dir, settings.seq)
    with torch.device("meta"):
        return float(bare.gpt(settings.size, settings.seq, words).flops_per_token(settings.seq))


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def write(out: Path, result: Result) -> None:
    tmp = out / "gpt2_check.json.tmp"
    tmp.write_text(json.dumps(result, indent=2, default=str) + "\n")
    tmp.replace(out / "gpt2_check.json")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="CPU, tiny GPT, fp32, 8 steps")
    parser.add_argument(
        "--out", type=Path, default=Path(os.environ.get("OUT") or ROOT / "bench/out/gpu")
    )
    parser.add_argument("--corpus", type=Path, default=corpus.DEFAULT_OUT)
    parser.add_argument("--steps", type=int, help="steps per leg (default 100; smoke 8)")
    parser.add_argument("--warmup", type=int, help="steps left out (default 10; smoke 2)")
    parser.add_argument("--peak-flops", type=float, help="per device (default 989e12 on GPU)")
    parser.add_argument("--legs", default=",".join(LEGS), help="comma-separated subset")
    parser.add_argument("--budget-s", type=float, default=540.0, help="stop starting legs after")
    args = parser.parse_args(argv)
    began = time.perf_counter()
    # SIGINT and SIGTERM (run.sh's timeout, Ctrl-C) end it with the legs that ran. Set
    # here, not inherited: a shell starts background commands with SIGINT ignored, and the
    # legs would inherit that and ignore the Ctrl-C that stops them.
    for stop_signal in (signal.SIGINT, signal.SIGTERM):
        signal.signal(stop_signal, _interrupt)
    settings = SMOKE if args.smoke else GPU
    settings = replace(
        settings,
        steps=args.steps or settings.steps,
        warmup=args.warmup or settings.warmup,
        peak_flops=args.peak_flops or settings.peak_flops,
    )
    legs_wanted = [leg.strip() for leg in args.legs.split(",") if leg.strip()]
    unknown = sorted(set(legs_wanted) - set(LEGS))
    if unknown or not 0 < settings.warmup < settings.steps:
        parser.error(f"--legs takes {', '.join(LEGS)} (got {unknown}); 0 < --warmup < --steps")
    args.out.mkdir(parents=True, exist_ok=True)
    environment = preflight(settings, args.corpus.resolve())
    print(f"gpt2_check: {environment['device_name']}, {environment['versions']}", flush=True)
    result: Result = {
        "settings": asdict(settings),
        "environment": environment,
        "config_check": [config_check(settings, args.corpus.resolve(), z) for z in (1, 2)],
        "flops_per_token": model_flops_per_token(settings, args.corpus.resolve()),
        "legs": {},
    }
    try:
        run_legs(result, legs_wanted, settings, args, began)
    except KeyboardInterrupt:
        print("gpt2_check: interrupted; the table shows the legs that ran", flush=True)
        interrupted = True
    else:
        interrupted = False
    result["ratios"] = figures.add_ratios(
        result["legs"], settings.peak_flops, result["flops_per_token"]
    )
    result["wall_s"] = round(time.perf_counter() - began, 1)
    result["table"] = figures.table(result)
    write(args.out, result)
    for check in result["config_check"]:
        if not check["same"]:
            print(f"WARNING: deepyard's DeepSpeed config differs: {check}", flush=True)
    print(result["table"], flush=True)
    failed = [n for n in legs_wanted if result["legs"].get(n, {}).get("status") != "ok"]
    return 130 if interrupted else 1 if failed else 0


def run_legs(
    result: Result,
    legs_wanted: list[str],
    settings: Settings,
    args: argparse.Namespace,
    began: float,
) -> None:
    """Each leg in turn into result["legs"], the JSON rewritten after each."""
    with tempfile.TemporaryDirectory(prefix="gpt2-check-runs-") as runs:
        for name in legs_wanted:
            left = args.budget_s - (time.perf_counter() - began)
            skip = skip_reason(result["legs"], name, left, args.budget_s)
            if skip:
                result["legs"][name] = {"leg": name, "status": "failed", "error": skip}
                continue
            print(f"gpt2_check: {name} ...", flush=True)
            leg = measure(
                name,
                settings,
                args.corpus.resolve(),
                Path(runs),
                args.out,
                min(settings.leg_timeout_s, left),
            )
            result["legs"][name] = leg
            print(f"gpt2_check: {name} {leg['status']} in {leg['wall_s']} s", flush=True)
            write(args.out, result)  # what ran so far, should the whole call be cut off


def skip_reason(done: dict[str, Result], name: str, left_s: float, budget_s: float) -> str:
    """Why not to start leg `name` ("" to start it)."""
    if left_s < 40:  # too little for a leg to start and run
        return f"skipped: --budget-s {budget_s:.0f} spent"
    starved = [n for n, leg in done.items() if "waiting for resources" in leg.get("error", "")]
    if name.startswith("deepyard") and starved:  # Ray saw no GPU: the next would wait too
        return f"skipped: {starved[0]} never got its Ray resources (see its log)"
    return ""


if __name__ == "__main__":
    raise SystemExit(main())
