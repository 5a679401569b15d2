"""Gradient x input: exact on models whose attributions are known in closed form, PNGs
that are real images of the promised size, and a token page that shows every token of
each row, HTML-escaped, with the prediction."""

from __future__ import annotations

import html
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image
from torch import nn
from typer.testing import CliRunner

from deepyard import models
from deepyard.analysis import render, saliency
from deepyard.cli.main import app
from deepyard.errors import DataError

DEEPYARD = [sys.executable, "-m", "deepyard.cli.main"]


def test_gradient_x_input_of_a_linear_model_is_w_c_times_x() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    x = torch.randn(5, 1, 4, 4)
    weight = model[1].weight.detach()

    predicted = saliency.features(model, x)
    fixed = saliency.features(model, x, target=2)

    assert torch.equal(predicted.targets, model(x).argmax(1))
    for i in range(5):
        c = int(predicted.targets[i])
        assert torch.equal(predicted.values[i], weight[c].view(1, 4, 4) * x[i])
        assert torch.equal(fixed.values[i], weight[2].view(1, 4, 4) * x[i])
    assert torch.allclose(predicted.probs, model(x).softmax(1))
    assert all(p.requires_grad for p in model.parameters())  # handed back trainable


def test_a_target_outside_the_classes_is_refused() -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    with pytest.raises(DataError, match=r"--target 3: the model has 3 classes; use 0..2"):
        saliency.features(model, torch.randn(2, 4), target=3)


class MeanOfEmbeddings(nn.Module):
    """logit_c = w_c . mean_i(e_i) + b_c, so token i's gradient x input is w_c . e_i / L."""

    def __init__(self) -> None:
        super().__init__()
        self.position = nn.Parameter(torch.zeros(1))  # not an embedding: never hooked
        self.embed = nn.Embedding(10, 4)
        self.head = nn.Linear(4, 2)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(ids).mean(1))


def test_token_attribution_is_gradient_x_embedding_summed_over_dimensions() -> None:
    torch.manual_seed(0)
    model = MeanOfEmbeddings()
    model.embed.weight.requires_grad_(False)  # frozen embeddings are attributed too
    ids = torch.tensor([[1, 2, 3], [4, 4, 9]])

    found = saliency.tokens(model, ids)

    with torch.no_grad():
        embedded, logits = model.embed(ids), model(ids)
    for i in range(2):
        c = int(logits[i].argmax())
        want = embedded[i] @ model.head.weight[c] / 3
        assert torch.allclose(found.values[i], want, rtol=1e-6, atol=1e-7)
        assert int(found.targets[i]) == c
    # The attributions of one row add up to its logit minus the bias (linear model).
    c0 = int(found.targets[0])
    bias = float(model.head.bias[c0].detach())
    assert float(found.values[0].sum()) == pytest.approx(float(logits[0, c0]) - bias, abs=1e-6)


def test_a_model_can_name_its_embedding_module() -> None:
    class Named(MeanOfEmbeddings):
        def __init__(self) -> None:
            super().__init__()
            self.other = nn.Embedding(3, 4)  # registered later, yet named as the one

        def embedding(self) -> nn.Module:
            return self.other

    model = Named()
    assert saliency.embedding_module(model) is model.other
    assert saliency.embedding_module(MeanOfEmbeddings()) is not None
    with pytest.raises(DataError, match=r"define embedding\(\) -> nn.Module"):
        saliency.embedding_module(nn.Linear(2, 2))


def test_saliency_png_is_the_image_beside_its_heatmap(tmp_path: Path) -> None:
    x = np.zeros((3, 28, 28), np.float32)
    x[0, 3, 4] = 1.0
    attribution = np.zeros_like(x)
    attribution[:, 10, 10] = 2.0  # strongest positive: red
    attribution[:, 20, 20] = -1.0  # negative: blue

    size = render.saliency_png(x, attribution, tmp_path / "a.png")

    with Image.open(tmp_path / "a.png") as image:
        image.verify()
    with Image.open(tmp_path / "a.png") as image:
        assert image.size == size == (2 * 112 + 4, 112)  # 28 px scaled 4x, twice, 4 px gap
        heat = 112 + 4
        assert image.getpixel((heat + 10 * 4, 10 * 4)) == (255, 0, 0)
        assert image.getpixel((heat + 20 * 4, 20 * 4)) == (127, 127, 255)  # half strength
        assert image.getpixel((heat, 0)) == (255, 255, 255)
        assert image.getpixel((4 * 4, 3 * 4)) == (255, 0, 0)  # the input, channel 0 only


def test_explain_cli_writes_a_png_per_row_of_an_image_model(make_saved) -> None:
    saved = make_saved()
    done = subprocess.run(
        [*DEEPYARD, "explain", str(saved.run_dir), "--count", "2", "--target", "1"],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr
    out = saved.run_dir / "explain-step5"
    assert done.stdout.strip() == str(out)
    index = json.loads((out / "index.json").read_text())
    assert [r["row"] for r in index["rows"]] == [0, 1]
    assert {r["target"] for r in index["rows"]} == {1}
    for row in index["rows"]:
        with Image.open(out / row["file"]) as image:
            assert image.size == (2 * 128 + 4, 128)  # 4x4 inputs scaled 32x


def test_rows_out_of_range_name_the_range(make_saved) -> None:
    saved = make_saved()
    done = CliRunner().invoke(app, ["explain", str(saved.run_dir), "--rows", "2,30"])
    assert done.exit_code == 2
    assert done.stderr.strip() == "error: --rows 2,30: the data has rows 0..29; [30] is not one"


TEXTS = ["a <b>great</b> film & cast", 'dull "plot" isn\'t it', "great great film"]


def tokenizer_file(path: Path) -> Path:
    from tokenizers import Tokenizer, models, pre_tokenizers

    split = pre_tokenizers.Whitespace().pre_tokenize_str
    words = sorted({w for t in TEXTS for w, _ in split(t)})
    vocab = {"[PAD]": 0, "[UNK]": 1, **{w: i + 2 for i, w in enumerate(words)}}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.add_special_tokens(["[PAD]", "[UNK]"])
    tokenizer.save(str(path))
    return path


def text_split(path: Path) -> Path:
    table = pa.table({"text": TEXTS * 4, "label": pa.array([1, 0, 1] * 4, pa.int64())})
    meta = {b"deepyard.num_classes": b"3", b"deepyard.label_names": b'["bad", "good", "meh"]'}
    pq.write_table(table.replace_schema_metadata(meta), path)
    return path


def test_explain_cli_shades_every_token_of_a_text_model_escaped(make_saved, tmp_path: Path) -> None:
    tokenizer = tokenizer_file(tmp_path / "tokenizer.json")
    split = text_split(tmp_path / "text.parquet")
    data = {
        "train": str(split),
        "eval": str(split),
        "text": "text",
        "tokenizer": {"path": str(tokenizer), "max_length": 16},
    }
    size = len(json.loads(tokenizer.read_text())["model"]["vocab"])
    args = {"embed_dim": 8, "hidden": 8, "dropout": 0.0}
    saved = make_saved("lstm", args=args, data=data, vocab=models.Vocab(size, 0))
    out = tmp_path / "explained"

    done = subprocess.run(
        [*DEEPYARD, "explain", str(saved.run_dir), "--rows", "0,1", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=180,
    )

    assert done.returncode == 0, done.stderr
    page = (out / "tokens.html").read_text()
    index = json.loads((out / "index.json").read_text())
    assert index["files"] == ["tokens.html"]
    from tokenizers import pre_tokenizers

    for row, text in zip(index["rows"], TEXTS[:2], strict=True):
        words = [w for w, _ in pre_tokenizers.Whitespace().pre_tokenize_str(text)]
        assert [t for t, _ in row["tokens"]] == words  # every token, no padding
        section = page.split(f"row {row['row']}: predicted", 1)[1].split("</section>", 1)[0]
        for word in words:
            assert f">{html.escape(word)}</span>" in section
        assert f"(p={row['probability']:.3f})" in section
        assert "true 1 (good)" in section if row["true"] == 1 else "true 0 (bad)" in section
    assert "<b>" not in page and "&lt;" in page and "&amp;" in page
