"""`deepyard data convert`: small CSV, JSON Lines and image folders round-trip into the
Parquet layout that training reads; each bad input is a DataError naming the file, the
column and the fix (and, from the CLI, exit 2 without a traceback)."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from PIL import Image
from typer.testing import CliRunner

from deepyard.cli.main import app
from deepyard.data import convert as convert_module
from deepyard.data import read_split
from deepyard.data.convert import ConvertOptions, convert
from deepyard.errors import DataError

runner = CliRunner()

CSV = """\
height,weight,colour,animal
1.5,30,brown,dog
0.5,4,grey,cat
2.0,40,black,dog
0.25,3,white,cat
0.75,5,"ginger, striped",bird
"""


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def meta(path: Path) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in pq.read_schema(path).metadata.items()}


def test_csv_numeric_features_and_text_labels(tmp_path: Path) -> None:
    out = tmp_path / "animals.parquet"
    paths = convert("csv", write(tmp_path / "a.csv", CSV), out, ConvertOptions(label="animal"))
    assert paths == [out]
    data = read_split(str(out), "features", "label")
    assert data.inputs.tolist() == [[1.5, 30], [0.5, 4], [2.0, 40], [0.25, 3], [0.75, 5]]
    assert data.labels.tolist() == [2, 1, 2, 1, 0]  # ids in sorted name order
    assert data.num_classes == 3 and data.input_shape == (2,)
    assert json.loads(meta(out)["deepyard.label_names"]) == ["bird", "cat", "dog"]
    assert pq.read_schema(out).names == ["features", "label"]  # `colour` is text: left out


def test_csv_chosen_features_integer_labels_and_fixed_names(tmp_path: Path) -> None:
    src = write(tmp_path / "a.csv", "x,y,z,target\n1,2,3,0\n4,5,6,4\n")
    out = tmp_path / "o.parquet"
    convert("csv", src, out, ConvertOptions(label="target", features=["z", "x"]))
    data = read_split(str(out), "features", "label")
    assert data.inputs.tolist() == [[3, 1], [6, 4]]
    assert data.num_classes == 5 and "deepyard.label_names" not in meta(out)
    names = ConvertOptions(label="animal", features=["weight"], label_names=["dog", "cat", "bird"])
    convert("csv", write(tmp_path / "b.csv", CSV), out, names)
    assert read_split(str(out), "features", "label").labels.tolist() == [0, 1, 0, 1, 2]


def test_jsonl_with_a_text_column(tmp_path: Path) -> None:
    rows = [
        {"review": "great fun", "stars": 3, "sentiment": "pos"},
        {"review": "dull,\nslow", "stars": 1, "sentiment": "neg"},
        {"review": "fine", "stars": 2, "sentiment": "pos"},
    ]
    src = write(tmp_path / "r.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "r.parquet"
    convert("jsonl", src, out, ConvertOptions(label="sentiment", text="review"))
    table = pq.read_table(out)
    assert table.schema.names == ["text", "label"]  # with --text, numbers only by --features
    assert table.to_pydict() == {"text": ["great fun", "dull,\nslow", "fine"], "label": [1, 0, 1]}
    assert meta(out)["deepyard.kind"] == "text"
    both = ConvertOptions(label="sentiment", text="review", features=["stars"])
    convert("jsonl", src, out, both)
    assert pq.read_table(out).column("features").to_pylist() == [[3.0], [1.0], [2.0]]


def test_csv_with_quoted_newlines(tmp_path: Path) -> None:
    src = write(tmp_path / "q.csv", 'text,label\n"line one\nline two",1\nplain,0\n')
    out = tmp_path / "q.parquet"
    convert("csv", src, out, ConvertOptions(label="label", text="text"))
    assert pq.read_table(out).column("text").to_pylist() == ["line one\nline two", "plain"]


def test_big_input_becomes_part_files_of_whole_row_groups(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(convert_module, "ROW_GROUP_ROWS", 64)
    monkeypatch.setattr(convert_module, "GROUPS_PER_FILE", 2)
    lines = "".join(f"{i},{i % 7}\n" for i in range(300))
    out = tmp_path / "big"
    paths = convert("csv", write(tmp_path / "b.csv", "x,y\n" + lines), out, ConvertOptions("y"))
    assert [p.name for p in paths] == [
        "part-00000.parquet",
        "part-00001.parquet",
        "part-00002.parquet",
    ]
    groups = [pq.ParquetFile(p).metadata.num_row_groups for p in paths]
    assert groups == [2, 2, 1]
    assert pq.ParquetFile(paths[0]).metadata.row_group(0).num_rows == 64
    data = read_split(str(out), "features", "label")
    assert data.inputs.view(-1).tolist() == list(range(300))  # every row, in order
    assert data.num_classes == 7
    assert not list(tmp_path.glob(".*tmp"))


# images ----------------------------------------------------------------------------


def image_folder(root: Path) -> Path:
    """cat/ (two 6x4 grey PNGs), dog/ (one 10x8 RGB JPEG), notes.txt ignored."""
    for name, colour in (("a.png", 0), ("b.png", 255)):
        (root / "cat").mkdir(parents=True, exist_ok=True)
        Image.new("L", (4, 6), colour).save(root / "cat" / name)
    (root / "dog").mkdir()
    Image.new("RGB", (8, 10), (255, 0, 0)).save(root / "dog" / "c.jpg", quality=100)
    (root / "dog" / "notes.txt").write_text("not an image")
    return root


def test_image_folder_defaults_to_the_first_images_size_and_mode(tmp_path: Path) -> None:
    out = tmp_path / "img.parquet"
    convert("images", image_folder(tmp_path / "img"), out, ConvertOptions())
    data = read_split(str(out), "features", "label")
    assert data.input_shape == (1, 6, 4) and data.labels.tolist() == [0, 0, 1]
    assert json.loads(meta(out)["deepyard.label_names"]) == ["cat", "dog"]
    assert data.inputs[0].max() == 0.0 and data.inputs[1].min() == 1.0
    assert 0.25 < float(data.inputs[2].mean()) < 0.35  # red, as grayscale (0.299 x 1.0)


def test_image_folder_resized_to_rgb(tmp_path: Path) -> None:
    out = tmp_path / "img.parquet"
    options = ConvertOptions(size=(5, 3), channels=3)
    convert("images", image_folder(tmp_path / "img"), out, options)
    data = read_split(str(out), "features", "label")
    assert data.input_shape == (3, 5, 3)
    red = data.inputs[2]
    assert float(red[0].min()) > 0.95 and float(red[1:].max()) < 0.05
    assert float(data.inputs.min()) >= 0.0 and float(data.inputs.max()) <= 1.0


# bad input -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "content", "options", "match"),
    [
        ("csv", CSV, {"label": "species"}, r"column 'species' not found in .*a\.csv; it has: "),
        ("csv", CSV, {}, r"needs --label COLUMN; .*a\.csv has columns: height, weight"),
        (
            "csv",
            CSV,
            {"label": "animal", "features": ["colour"]},
            r"column 'colour' in .*a\.csv has type string, not numbers; leave it out of "
            r"--features",
        ),
        ("csv", "", {"label": "y"}, r"a\.csv is empty; convert a file with a header and rows"),
        ("csv", "x,y\n", {"label": "y"}, r"a\.csv has no rows"),
        ("jsonl", "", {"label": "y"}, r"a\.jsonl is empty"),
        ("csv", "x,y\n1,\n2,1\n", {"label": "y"}, r"label column 'y' in .*has missing values"),
        ("csv", "x,y\n,0\n2,1\n", {"label": "y"}, r"feature column 'x' in .*missing values"),
        ("csv", "x,y\n1,0.5\n", {"label": "y"}, r"label column 'y' .* type double; use integer"),
        ("csv", "x,y\n1,-1\n", {"label": "y"}, r"label column 'y' .*negative values"),
        (
            "csv",
            CSV,
            {"label": "animal", "label_names": ["cat", "dog"]},
            r"holds bird, not in --label-names; add them there",
        ),
        ("csv", CSV, {"label": "animal", "size": (2, 2)}, r"--size do not apply to .* csv"),
    ],
    ids=[
        "missing-label",
        "no-label",
        "text-feature",
        "empty-csv",
        "header-only",
        "empty-jsonl",
        "null-label",
        "null-feature",
        "float-label",
        "negative-label",
        "unknown-label-name",
        "image-option",
    ],
)
def test_bad_tables(tmp_path: Path, fmt: str, content: str, options: dict, match: str) -> None:
    src = write(tmp_path / f"a.{fmt}", content)
    out = tmp_path / "out.parquet"
    with pytest.raises(DataError, match=match) as info:
        convert(fmt, src, out, ConvertOptions(**options))
    assert str(src) in str(info.value) or "--" in str(info.value)
    assert not out.exists()
    assert not list(tmp_path.glob(".*tmp"))


def test_text_in_a_number_column_after_the_first_block(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Column types are guessed from the first block; a later surprise names the column."""
    monkeypatch.setattr(convert_module, "CSV_BLOCK_BYTES", 64)
    rows = "".join(f"{i % 2},{i}\n" for i in range(40))
    src = write(tmp_path / "m.csv", "y,x\n" + rows + "1,abc\n")
    with pytest.raises(DataError, match=r"m\.csv: .*column 'x' holds values of different kinds"):
        convert("csv", src, tmp_path / "o.parquet", ConvertOptions(label="y"))
    assert not (tmp_path / "o.parquet").exists()


def test_unreadable_image_names_the_file(tmp_path: Path) -> None:
    root = image_folder(tmp_path / "img")
    bad = root / "dog" / "broken.png"
    bad.write_bytes(b"\x89PNG not really")
    with pytest.raises(DataError, match=r"cannot read image .*broken\.png: .*delete or replace"):
        convert("images", root, tmp_path / "o.parquet", ConvertOptions())
    assert not (tmp_path / "o.parquet").exists()


def test_folder_without_class_folders(tmp_path: Path) -> None:
    Image.new("L", (2, 2)).save(tmp_path / "loose.png")
    with pytest.raises(DataError, match=r"no class folders with .png/.jpg images; lay them out"):
        convert("images", tmp_path, tmp_path / "o.parquet", ConvertOptions())


def test_cli_convert(tmp_path: Path) -> None:
    src = write(tmp_path / "a.csv", CSV)
    out = tmp_path / "o.parquet"
    ok = runner.invoke(app, ["data", "convert", "csv", str(src), str(out), "--label", "animal"])
    assert ok.exit_code == 0, ok.output
    assert f"wrote {out}" in ok.stderr
    images = ["data", "convert", "images", str(image_folder(tmp_path / "img")), str(out)]
    ok = runner.invoke(app, [*images, "--size", "3x2", "--channels", "3"])
    assert ok.exit_code == 0, ok.output
    assert read_split(str(out), "features", "label").input_shape == (3, 3, 2)
    for args, message in (
        (["csv", str(src), str(out), "--label", "nope"], "column 'nope' not found in"),
        (["xml", str(src), str(out)], "unknown format 'xml'; use one of: csv, jsonl, images"),
        ([*images[2:], "--size", "big"], "--size big: use HEIGHTxWIDTH in pixels"),
    ):
        bad = runner.invoke(app, ["data", "convert", *args])
        assert bad.exit_code == 2, bad.output
        assert message in bad.stderr and "Traceback" not in bad.output
