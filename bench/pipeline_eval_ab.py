"""Pipeline evaluation, one batch per `eval_batch` call against streamed calls, timed in
the same processes, alternately (so that load from others on a shared machine falls on
both alike).

Under torchrun on 2 ranks (gloo), builds a GPT in 2 stages through deepyard's own
pipeline builder and engine (default: the GPT of deepyard.testing.jobs.small_gpt_job,
4 blocks, 32 wide, the MiniLM vocabulary, whose head is 94% of its FLOPs; `--vocab 256
--n-layer 8 --d-model 64` gives 2 stages 48% and 52%) and evaluates `--rows` rows of 32
random tokens in batches of 4, `--repeats` times each way: "per-batch" makes one call
per batch (what deepyard did before: the pipeline filled and drained for every batch),
"streamed" is deepyard's evaluation now (train.pipeline.eval_stream). Both score the
same loss. Prints min and median seconds of each; results go to
bench/out/pipeline_eval_ab.json.

Usage: PYTHONPATH=platform .venv/bin/python bench/pipeline_eval_ab.py [--partition compute]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out"
ARGS: dict[str, Any] = {"n_head": 2, "max_seq_len": 32, "dropout": 0.0}
LENGTH, BATCH = 32, 4


def _worker(args: argparse.Namespace) -> None:
    import torch

    from deepyard import tasks
    from deepyard.data import TensorData
    from deepyard.models import layer_init
    from deepyard.models.registry import Vocab
    from deepyard.testing.jobs import gpt_pipeline_spec
    from deepyard.train import pipeline
    from deepyard.train.dist import WorkerContext, init_process_group

    ctx = WorkerContext.from_env()
    init_process_group(ctx, cpus=1)
    task = tasks.get("language-modeling")
    model_args = {**ARGS, "n_layer": args.n_layer, "d_model": args.d_model}
    spec = gpt_pipeline_spec(
        model_args, LENGTH, 2, 2, pipeline_partition=args.partition, gradient_accumulation=4
    )
    vocab = Vocab(args.vocab, 0)
    model = layer_init.build_on_meta("gpt", model_args, (LENGTH,), 2, vocab)
    staged = pipeline.build_module(model, spec, task, vocab.pad_id, (LENGTH,))
    engine = task.build_engine(spec, staged, total_steps=1, load_universal=False)
    ids = torch.randint(1, vocab.size, (args.rows, LENGTH), generator=torch.Generator())
    data = TensorData(ids, torch.zeros(args.rows, dtype=torch.int64), (LENGTH,), 2, pad_id=0)
    cpu = torch.device("cpu")
    per_stage, accumulation = pipeline.EVAL_MICRO_BATCHES_PER_STAGE, engine.micro_batches
    times: dict[str, list[float]] = {"per-batch": [], "streamed": []}
    losses: dict[str, float] = {}
    for _ in range(args.repeats):
        for way in times:
            one = way == "per-batch"  # one micro-batch per eval_batch call
            pipeline.EVAL_MICRO_BATCHES_PER_STAGE = 0 if one else per_stage
            engine.micro_batches = 1 if one else accumulation
            torch.distributed.barrier()
            started = time.perf_counter()
            result = task.evaluate(
                engine, data, ctx.rank, ctx.world_size, BATCH, cpu, torch.float32
            )
            times[way].append(time.perf_counter() - started)
            losses[way] = result.metrics["loss"]
    if ctx.rank == 0:
        print(json.dumps({"times": times, "losses": losses}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--partition", default="parameters")
    parser.add_argument("--n-layer", type=int, default=4)
    parser.add_argument("--d-model", type=int, default=32)
    parser.add_argument("--vocab", type=int, default=30522, help="default: MiniLM's")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        _worker(args)
        return
    from deepyard.testing.torchrun import TORCHRUN
    from deepyard.train.dist import free_port

    argv = [TORCHRUN, "--nproc-per-node", "2", "--master-addr", "127.0.0.1"]
    argv += ["--master-port", str(free_port()), __file__, "--worker", *sys.argv[1:]]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=900, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        raise SystemExit(done.stderr[-3000:])
    measured: dict[str, Any] = json.loads(lines[-1])
    result: dict[str, Any] = {"argv": sys.argv[1:]}
    for way, seconds in measured["times"].items():
        result[way] = {
            "min_s": round(min(seconds), 3),
            "median_s": round(statistics.median(seconds), 3),
            "loss": measured["losses"][way],
        }
    OUT.mkdir(parents=True, exist_ok=True)
    with (OUT / "pipeline_eval_ab.json").open("a") as out:
        out.write(json.dumps(result) + "\n")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
