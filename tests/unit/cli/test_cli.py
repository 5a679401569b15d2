"""The `deepyard` command as a user runs it: user errors are a message and exit code 2,
never a traceback; the read-only commands print what they promise."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from deepyard.cli.main import app
from deepyard.data import read_split

runner = CliRunner()


def test_validate_bad_spec_exits_2_with_the_message_on_stderr(write_spec, base_spec_text) -> None:
    path = write_spec(base_spec_text.replace("max_steps: 5", "max_step: 5"))
    result = runner.invoke(app, ["spec", "validate", str(path)])
    assert result.exit_code == 2
    assert f"{path}:9: training.max_step: unknown key; did you mean 'max_steps'" in result.stderr
    assert result.stderr.startswith("error: invalid job spec")
    assert "Traceback" not in result.output
    assert result.stdout == ""


def test_validate_prints_the_resolved_spec_with_overrides(write_spec, base_spec_text) -> None:
    path = write_spec(base_spec_text)
    result = runner.invoke(
        app,
        ["spec", "validate", str(path), "--set", "optimizer.lr=0.01", "--set", "data.shuffle=no"],
    )
    assert result.exit_code == 0, result.output
    assert "valid" in result.stderr and str(path) in result.stderr
    resolved = yaml.safe_load(result.stdout)
    assert resolved["optimizer"]["lr"] == 0.01
    assert resolved["data"]["shuffle"] is False
    assert resolved["parallelism"]["zero_stage"] == 0  # defaults are filled in


def test_validate_bad_override_names_set(write_spec, base_spec_text) -> None:
    path = write_spec(base_spec_text)
    result = runner.invoke(app, ["spec", "validate", str(path), "--set", "training.max_steps=-3"])
    assert result.exit_code == 2
    assert "--set: training.max_steps = -3" in result.stderr


def test_values_with_brackets_are_printed_verbatim(write_spec, base_spec_text) -> None:
    """Messages quote user values and regex patterns; they are text, not rich markup."""
    for name in ("'[/x]'", "'[bold]x'"):
        path = write_spec(base_spec_text.replace("name: tiny", f"name: {name}"))
        result = runner.invoke(app, ["spec", "validate", str(path)])
        assert result.exit_code == 2, result.output
        assert f"name = {name}" in result.stderr
        assert "'^[a-z0-9][a-z0-9._-]{0,62}$'" in result.stderr
        assert "Traceback" not in result.output


def test_validate_missing_file(tmp_path: Path) -> None:
    result = runner.invoke(app, ["spec", "validate", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 2
    assert "no such file" in result.stderr


def test_run_with_a_bad_spec_fails_before_anything_starts(write_spec, base_spec_text) -> None:
    path = write_spec(base_spec_text.replace("batch_size: 8", "batch_size: 0"))
    result = runner.invoke(app, ["run", str(path)])
    assert result.exit_code == 2
    assert "data.batch_size = 0" in result.stderr
    assert "Traceback" not in result.output


def test_schema_is_json_schema_of_the_job_spec() -> None:
    result = runner.invoke(app, ["spec", "schema"])
    assert result.exit_code == 0
    schema = json.loads(result.stdout)
    assert schema["type"] == "object"
    assert schema["additionalProperties"] is False
    expected = {"name", "model", "data", "optimizer", "training", "resources", "parallelism"}
    assert expected <= set(schema["properties"])


def test_models_list_shows_the_registered_models() -> None:
    """Every model: its family, parameter count for its default arguments, example job."""
    from deepyard import models

    result = runner.invoke(app, ["models", "list"], env={"COLUMNS": "250"})
    assert result.exit_code == 0
    rows = {
        cells[0]: cells
        for line in result.stdout.splitlines()
        if line.count("│") >= 5
        for cells in [[c.strip() for c in line.split("│")[1:-1]]]
        if cells[0]  # not the continuation line of a wrapped row
    }
    assert set(rows) == set(models.names())
    for name, (_, family, parameters, _, job) in rows.items():
        entry = models.get(name)
        assert family == entry.family
        if parameters.startswith("- ("):  # an optional package is missing: say which
            with pytest.raises(ValueError, match="install"):
                models.num_parameters(name)
            assert "deepyard[vision]" in result.stdout  # printed as written, not as markup
            continue
        assert int(parameters.replace(",", "")) == models.num_parameters(name) > 0
        if entry.example_job is not None:
            assert job == entry.example_job
            assert (Path(__file__).resolve().parents[3] / job).is_file(), job
    assert rows["cnn"][2] == "19,706"  # width 16, 2 stages, 28x28x1, 10 classes


def test_data_prepare_digits_writes_both_splits(tmp_path: Path, deepyard_cache: Path) -> None:
    out = tmp_path / "digits"
    result = runner.invoke(app, ["data", "prepare", "digits", str(out)])
    assert result.exit_code == 0, result.output
    for split, rows in (("train", 1437), ("test", 360)):
        path = out / f"{split}.parquet"
        assert f"wrote {path}" in result.stderr
        assert len(read_split(str(path), "features", "label")) == rows
    assert not deepyard_cache.exists()  # an explicit OUT never touches the cache


def test_data_prepare_unknown_dataset_lists_the_valid_ones(tmp_path: Path) -> None:
    result = runner.invoke(app, ["data", "prepare", "nope", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert "'nope' is not a packaged dataset; use one of: digits, fashion-mnist" in result.stderr
    assert "Traceback" not in result.output
    assert not (tmp_path / "out").exists()


def test_installed_command_reports_a_bad_spec_without_traceback(write_spec, base_spec_text) -> None:
    exe = Path(sys.executable).parent / "deepyard"
    if not exe.exists():
        pytest.skip(f"{exe} is not installed (pip install -e .)")
    path = write_spec(base_spec_text + "parallelism:\n  zero_stage: 4\n")
    proc = subprocess.run(
        [str(exe), "spec", "validate", str(path)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2
    assert f"{path}:11: parallelism.zero_stage = 4" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stdout == ""
