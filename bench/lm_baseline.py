"""Count-based perplexities that a language-model job's held-out perplexity is read against.

Reads a job spec's training and eval splits (a packaged dataset is prepared first),
tokenizes them with the job's tokenizer exactly as training does (truncated to
max_length), and scores the eval split's next tokens (every token after a row's first:
the targets the `language-modeling` task scores) with models counted on the training
split's targets:

  unigram   add-k smoothed token frequencies, k tuned on the last 10% of training rows
  bigram    the previous token's next-token frequencies, linearly interpolated with the
            unigram; the weight tuned on the same 10% (counted on the other 90%)

Usage: .venv/bin/python bench/lm_baseline.py [--job jobs/examples/rotten_tomatoes_gpt.yaml]
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from deepyard import spec as specs
from deepyard.data import resolve_sources
from deepyard.data.text import encode, load_tokenizer

ROOT = Path(__file__).resolve().parents[1]


class Counts:
    def __init__(self, rows: Sequence[np.ndarray], vocab: int) -> None:
        self.vocab = vocab
        self.unigram: Counter[int] = Counter()
        self.bigram: Counter[tuple[int, int]] = Counter()
        self.context: Counter[int] = Counter()
        for ids in rows:
            tokens = ids.tolist()
            self.unigram.update(tokens[1:])
            pairs = list(itertools.pairwise(tokens))
            self.bigram.update(pairs)
            self.context.update(prev for prev, _ in pairs)
        self.total = sum(self.unigram.values())

    def p_unigram(self, token: int, k: float) -> float:
        return (self.unigram[token] + k) / (self.total + k * self.vocab)

    def p_bigram(self, prev: int, token: int, k: float, weight: float) -> float:
        seen = self.context[prev]
        bigram = self.bigram[prev, token] / seen if seen else 0.0
        return weight * bigram + (1 - weight) * self.p_unigram(token, k)


def perplexity(rows: Sequence[np.ndarray], prob: Callable[[int, int], float]) -> float:
    nll, count = 0.0, 0
    for ids in rows:
        tokens = ids.tolist()
        for prev, token in itertools.pairwise(tokens):
            nll -= math.log(prob(prev, token))
            count += 1
    return math.exp(nll / count)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--job", default=str(ROOT / "jobs/examples/rotten_tomatoes_gpt.yaml"))
    args = parser.parse_args()
    spec = specs.load(Path(args.job), [])
    assert spec.data.text is not None and spec.data.tokenizer is not None, "a text job"
    train_uri, eval_uri = resolve_sources(spec.data)
    tokenizer = load_tokenizer(spec.data.tokenizer)
    vocab = tokenizer.get_vocab_size()

    def rows(uri: str) -> list[np.ndarray]:
        texts = pq.read_table(uri, columns=[spec.data.text]).column(0).to_pylist()
        return list(encode(tokenizer, texts))

    train, held_out = rows(train_uri), rows(str(eval_uri))
    cut = len(train) * 9 // 10
    tuning = Counts(train[:cut], vocab)
    k = min(
        (0.01, 0.03, 0.1, 0.3, 1.0),
        key=lambda k: perplexity(train[cut:], lambda p, t: tuning.p_unigram(t, k)),
    )
    weight = min(
        (0.3, 0.5, 0.6, 0.7, 0.8, 0.9),
        key=lambda w: perplexity(train[cut:], lambda p, t: tuning.p_bigram(p, t, k, w)),
    )
    counts = Counts(train, vocab)
    out = {
        "job": args.job,
        "train_tokens": counts.total,
        "eval_tokens": sum(len(ids) - 1 for ids in held_out),
        "unigram_k": k,
        "unigram_perplexity": round(perplexity(held_out, lambda p, t: counts.p_unigram(t, k)), 2),
        "bigram_weight": weight,
        "bigram_perplexity": round(
            perplexity(held_out, lambda p, t: counts.p_bigram(p, t, k, weight)), 2
        ),
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
