"""The GPT: causal (a later token never changes an earlier position's logits), blind to
trailing padding, one tied embedding/head weight, layers that compose to forward (the unit
pipeline stages are cut from), exact FLOPs per token against torch's FlopCounterMode,
argument errors that name the field and the fix, and the GPT-2-small-sized job's size."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from deepyard import models
from deepyard import spec as specs
from deepyard.models.gpt import GPT
from deepyard.models.registry import MINILM_VOCAB
from deepyard.telemetry.flops import TRAIN_FACTOR, forward_flops_per_token

EXAMPLES = Path(__file__).resolve().parents[3] / "jobs" / "examples"
VOCAB = models.Vocab(size=1000, pad_id=0)
TINY = {"size": "tiny", "dropout": 0.0}


def build(rows: int = 16, vocab: models.Vocab = VOCAB, **args: object) -> GPT:
    torch.manual_seed(0)
    model = models.build("gpt", {**TINY, **args}, (rows,), 2, vocab)
    assert isinstance(model, GPT)
    return model.eval()


def test_registered_as_a_language_model_of_tokens() -> None:
    entry = models.get("gpt")
    assert (entry.family, entry.inputs, entry.task) == (
        "language-model",
        "tokens",
        "language-modeling",
    )
    assert entry.example_job == "jobs/examples/rotten_tomatoes_gpt.yaml"
    assert (EXAMPLES.parent.parent / entry.example_job).is_file()


def test_logits_per_position_over_the_vocabulary() -> None:
    ids = torch.randint(1, 1000, (3, 11))
    with torch.no_grad():
        assert build()(ids).shape == (3, 11, 1000)


def test_a_later_token_never_changes_earlier_logits() -> None:
    model = build()
    ids = torch.randint(1, 1000, (2, 12))
    changed = ids.clone()
    changed[:, 7:] = torch.randint(1, 1000, (2, 5))
    with torch.no_grad():
        before, after = model(ids), model(changed)
    torch.testing.assert_close(before[:, :7], after[:, :7])
    assert not torch.allclose(before[:, 7:], after[:, 7:])  # the model does read its input


def test_trailing_padding_does_not_change_a_rows_logits() -> None:
    model = build()
    ids = torch.randint(1, 1000, (3, 9))
    padded = torch.cat([ids, torch.full((3, 5), VOCAB.pad_id)], dim=1)
    with torch.no_grad():
        torch.testing.assert_close(model(padded)[:, :9], model(ids), atol=1e-5, rtol=1e-5)


def test_layers_compose_to_forward_and_the_head_is_the_embedding() -> None:
    model = build()
    layers = model.layers()
    assert len(layers) == 2 + 4  # token lookup, positions, 2 blocks (tiny), final norm, head
    ids = torch.randint(1, 1000, (2, 10))
    x = ids
    with torch.no_grad():
        for layer in layers:
            x = layer(x)
        assert torch.equal(x, model(ids))  # the same operations: bit for bit
    assert layers[-1].weight is layers[0].weight  # tied: one parameter
    d, n_layer, vocab, context = 64, 2, 1000, 128  # the tiny preset
    per_block = 12 * d * d + 13 * d  # 4 projections' weights and biases, 2 LayerNorms
    expected = vocab * d + context * d + n_layer * per_block + 2 * d  # final LayerNorm
    assert sum(p.numel() for p in model.parameters()) == expected


def counted_flops(model: torch.nn.Module, ids: torch.Tensor, backward: bool = False) -> int:
    counter = FlopCounterMode(display=False)
    # The math backend: torch's counter has no entry for the CPU fused attention kernel.
    with counter, sdpa_kernel(SDPBackend.MATH):
        logits = model(ids)
        if backward:
            logits.float().pow(2).mean().backward()
    return counter.get_total_flops()


@pytest.mark.parametrize(("size", "rows"), [("tiny", 32), ("tiny", 128), ("mini", 64)])
def test_flops_per_token_equal_torchs_count_of_the_built_model(size: str, rows: int) -> None:
    """Exact (not approximately): embedding lookups, LayerNorm, GELU, biases and softmax
    are not matmuls, and torch counts none of them either."""
    model = build(rows, models.Vocab(5000, 0), size=size)
    ids = torch.randint(1, 5000, (2, rows))
    with torch.no_grad():
        forward = counted_flops(model, ids)
    assert forward == 2 * rows * model.flops_per_token(rows)
    assert forward_flops_per_token(model, (rows,)) == model.flops_per_token(rows)
    assert model.flops_per_sample((rows,)) == rows * model.flops_per_token(rows)
    # Training costs 3 forward passes (the backward pass computes two matmuls for one).
    assert counted_flops(model.train(), ids, backward=True) == TRAIN_FACTOR * forward


def test_flops_per_token_is_palms_formula_for_gpt2_small() -> None:
    """6N + 12 n_layer seq d per trained token (PaLM, appendix B), N the non-embedding
    matmul weights plus the (tied) head: 124M-class figures."""
    with torch.device("meta"):  # shapes only: no 124M weights drawn
        model = build(1024, models.Vocab(50257, 0), size="small")
    n_matmul = 12 * 12 * 768 * 768 + 768 * 50257
    assert TRAIN_FACTOR * model.flops_per_token(1024) == 6 * n_matmul + 12 * 12 * 1024 * 768


@pytest.mark.parametrize(
    ("args", "rows", "message"),
    [
        ({"d_model": 100, "n_head": 3}, 16, r"model.args.d_model=100 .*must divide by n_head=3"),
        ({"max_seq_len": 32}, 64, r"model.args.max_seq_len=32 .*data.tokenizer.max_length=64"),
        ({"n_layer": 0}, 16, r"model.args.n_layer=0 for model gpt must be positive"),
        ({"dropout": 1.0}, 16, r"model.args.dropout=1.0 .*\[0, 1\)"),
        ({"size": "huge"}, 16, r"model.args.size='huge' .*use one of: tiny, mini, small"),
    ],
)
def test_bad_arguments_name_the_field_and_the_fix(
    args: dict[str, object], rows: int, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        models.build("gpt", args, (rows,), 2, VOCAB)


def test_unknown_argument_lists_the_valid_ones() -> None:
    with pytest.raises(ValueError, match=r"model.args has heads.*valid arguments: size, n_layer"):
        models.check("gpt", {"heads": 4})


def test_a_row_longer_than_the_context_says_which_fields_to_change() -> None:
    with pytest.raises(ValueError, match=r"20 tokens .*max_seq_len=16.*data.tokenizer.max_length"):
        build(16, max_seq_len=16)(torch.ones(1, 20, dtype=torch.long))


def test_gpt2_small_job_validates_and_builds_at_its_stated_size() -> None:
    """GPT-2 small's shape (12 x 768, 12 heads, 1024 positions) on the MiniLM vocabulary:
    GPT-2's own tokenizer (50,257 tokens) does not ship in any package here."""
    spec = specs.load(EXAMPLES / "gpt2_small.yaml", [])
    assert spec.model.name == "gpt" and spec.task_name == "language-modeling"
    assert spec.data.tokenizer is not None and spec.data.tokenizer.max_length == 1024
    model = models.build(spec.model.name, spec.model.args, (1024,), 2, MINILM_VOCAB)
    assert sum(p.numel() for p in model.parameters()) == 109_283_328
    # The same shape with GPT-2's vocabulary is the 124M model it is named after.
    with torch.device("meta"):
        gpt2 = models.build(spec.model.name, spec.model.args, (1024,), 2, models.Vocab(50257, 0))
    assert sum(p.numel() for p in gpt2.parameters()) == 124_439_808
