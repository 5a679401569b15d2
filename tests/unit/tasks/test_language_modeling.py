"""The language-modeling task against a direct computation: each position predicts the
next token, pad targets count nowhere, and the eval metrics over two gloo ranks are the
token-weighted figures of one process scoring every row (not a mean of rank means)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from deepyard.data import TensorData
from deepyard.errors import DataError
from deepyard.tasks import get, info, lower_is_better
from deepyard.testing.gloo import on_two_ranks

PAD = 0
VOCAB = 12
CPU = torch.device("cpu")
task = get("language-modeling")


def rows_of_different_lengths(num_rows: int = 9, width: int = 7) -> torch.Tensor:
    """Token ids (num_rows, width), right-padded with PAD; lengths 2..width, uneven."""
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(1, VOCAB, (num_rows, width), generator=gen)
    lengths = [2 + (3 * row) % (width - 1) for row in range(num_rows)]
    for row, length in enumerate(lengths):
        ids[row, length:] = PAD
    return ids


class Bigram(nn.Module):
    """A tiny causal model: each position's logits depend on its own token only."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.table = nn.Embedding(VOCAB, VOCAB)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.table(ids)


def direct(model: nn.Module, ids: torch.Tensor) -> dict[str, float]:
    """Token by token in float64: -log p(next token), skipping pad targets."""
    with torch.no_grad():
        logp = model(ids).double().log_softmax(-1)
    nll, correct, tokens = 0.0, 0, 0
    for row in range(ids.shape[0]):
        for t in range(ids.shape[1] - 1):
            target = int(ids[row, t + 1])
            if target == PAD:
                continue
            nll -= float(logp[row, t, target])
            correct += int(logp[row, t].argmax()) == target
            tokens += 1
    return {"loss": nll / tokens, "accuracy": correct / tokens, "tokens": tokens}


def test_catalogue_entry_ranks_by_perplexity_lower_first() -> None:
    entry = info("language-modeling")
    assert entry.labels == "none" and entry.best == "perplexity"
    assert set(entry.metrics) == {"loss", "perplexity", "accuracy"}
    assert lower_is_better("perplexity") and not lower_is_better("accuracy")


def test_loss_is_the_mean_over_real_next_tokens() -> None:
    model, ids = Bigram(), rows_of_different_lengths()
    loss = task.loss(model(ids), ids, torch.zeros(len(ids)), pad_id=PAD)
    expected = direct(model, ids)
    assert float(loss.detach()) == pytest.approx(expected["loss"], rel=1e-6)
    # Without the pad id every position would count: a different (wrong) figure.
    unmasked = task.loss(model(ids), ids, torch.zeros(len(ids)))
    assert abs(float(unmasked.detach()) - expected["loss"]) > 0.01
    loss.backward()  # a training loss: gradients reach the model
    assert model.table.weight.grad is not None


def test_train_step_passes_the_pad_id_and_counts_real_tokens() -> None:
    model, ids = Bigram(), rows_of_different_lengths()
    expected = direct(model, ids)

    class Engine:  # the three calls the step makes on a DeepSpeed engine
        def __call__(self, x: torch.Tensor) -> torch.Tensor:
            return model(x)

        def backward(self, loss: torch.Tensor) -> None:
            loss.backward()

        def step(self) -> None:
            pass

    result = task.train_step(
        Engine(), lambda: (ids, torch.zeros(len(ids))), 1, CPU, torch.float32, PAD
    )
    assert result.loss == pytest.approx(expected["loss"], rel=1e-6)
    assert result.tokens == int((ids != PAD).sum())


def split() -> TensorData:
    ids = rows_of_different_lengths(num_rows=11)
    return TensorData(ids, torch.zeros(11, dtype=torch.int64), (ids.shape[1],), 2, pad_id=PAD)


def test_one_process_scores_every_real_token() -> None:
    model, data = Bigram(), split()
    metrics = task.evaluate(model, data, 0, 1, 4, CPU, torch.float32).metrics
    expected = direct(model, data.inputs)
    assert metrics["loss"] == pytest.approx(expected["loss"], rel=1e-6)
    assert metrics["perplexity"] == pytest.approx(math.exp(expected["loss"]), rel=1e-6)
    assert metrics["accuracy"] == pytest.approx(expected["accuracy"])
    assert metrics["num_tokens"] == expected["tokens"]
    assert metrics["num_samples"] == 11


def test_an_eval_split_with_nothing_to_predict_says_so() -> None:
    ids = torch.tensor([[5, PAD], [7, PAD]])
    data = TensorData(ids, torch.zeros(2, dtype=torch.int64), (2,), 2, pad_id=PAD)
    with pytest.raises(DataError, match=r"no token to predict.*two tokens or more"):
        task.evaluate(Bigram(), data, 0, 1, 4, CPU, torch.float32)


def test_logits_that_are_not_per_position_name_the_model_to_use() -> None:
    ids = rows_of_different_lengths()
    with pytest.raises(ValueError, match=r"logits \(batch, length, vocab\).*model.name: gpt"):
        task.loss(torch.zeros(len(ids), 2), ids, torch.zeros(len(ids)), pad_id=PAD)


def _eval_rank(rank: int, world_size: int) -> dict[str, float]:
    result = task.evaluate(Bigram(), split(), rank, world_size, 4, CPU, torch.float32)
    return result.metrics


def test_two_gloo_ranks_sum_tokens_before_dividing(tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.setenv("GLOO_SOCKET_IFNAME", "lo")
    ranks = on_two_ranks(_eval_rank, tmp_path)
    model, data = Bigram(), split()
    expected = direct(model, data.inputs)
    for metrics in ranks:
        assert metrics["num_samples"] == 11  # 6 + 5 rows; rank 1's padding row is masked
        assert metrics["num_tokens"] == expected["tokens"]
        assert metrics["loss"] == pytest.approx(expected["loss"], rel=1e-6)
        assert metrics["perplexity"] == pytest.approx(math.exp(expected["loss"]), rel=1e-6)
        assert metrics["accuracy"] == pytest.approx(expected["accuracy"])
    # The ranks hold different numbers of tokens: the mean of their own losses differs.
    halves = [direct(model, data.inputs[:6]), direct(model, data.inputs[6:])]
    assert halves[0]["tokens"] != halves[1]["tokens"]
    assert abs(sum(h["loss"] for h in halves) / 2 - expected["loss"]) > 1e-3
