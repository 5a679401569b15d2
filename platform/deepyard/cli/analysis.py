"""`deepyard eval` and `deepyard explain`: use a finished checkpoint (thin: analysis/ acts)."""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from deepyard.cli.errors import err_console, user_errors

CheckpointArg = typer.Argument(
    ...,
    metavar="CHECKPOINT",
    help="A checkpoint (…/<lineage>/step-000000100, local or s3://…), a job's checkpoint.uri "
    "(its newest checkpoint), or a run folder OUTPUT_DIR/NAME/RUN_ID (the newest checkpoint "
    "that run saved).",
)
DeviceOpt = typer.Option("cpu", "--device", help="cpu, or cuda where a GPU is visible.")
RunOpt = typer.Option(
    None,
    "--run",
    help="The run folder whose record gets the result (default: the run that saved it).",
)


def _warn(message: str) -> None:
    err_console.print(f"[yellow]warning[/]: {escape(message)}")


def eval_checkpoint(
    checkpoint: str = CheckpointArg,
    data: str | None = typer.Option(
        None,
        "--data",
        help="A Parquet file/folder/URI or a packaged dataset name (its test split); "
        "default: the job's own eval data.",
    ),
    out: Path | None = typer.Option(
        None,
        "--out",
        help="JSON file to write (default: RUN_DIR/eval-step<N>-<data>.json, or the current "
        "folder when the run is unknown).",
    ),
    embeddings: Path | None = typer.Option(
        None,
        "--embeddings",
        help="Also write each row's embedding (models with encode(inputs) -> (N, D)) and "
        "label to this Parquet file.",
    ),
    run_dir: Path | None = RunOpt,
    device: str = DeviceOpt,
    batch_size: int | None = typer.Option(
        None, "--batch-size", help="Rows per forward (default: the job's data.batch_size)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON on stdout."),
) -> None:
    """Evaluate a checkpoint on a split with its model's task (in this process, no
    DeepSpeed); write the metrics as JSON and into the run's record (`deepyard report`)."""
    from deepyard.analysis import loaded as loading
    from deepyard.analysis import locate, offline

    # stdout carries the --json line alone: whatever DeepSpeed prints goes to stderr.
    with user_errors(), contextlib.redirect_stdout(sys.stderr):
        located = locate.resolve(checkpoint, _warn, run_dir)
        model = loading.load(located, loading.pick_device(device))
        split = loading.read_data(model, data, "--data")
        record = offline.evaluate_and_record(model, split, out, embeddings, batch_size)
    _show(record)
    if as_json:
        print(json.dumps(record))


def _show(record: dict) -> None:
    console = Console(stderr=True, highlight=False, soft_wrap=True)
    table = Table(title=f"{record['job']} step {record['step']} on {record['data']}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    recorded = record.get("recorded_at_step") or {}
    if recorded:
        table.add_column("in training", justify="right")
    for name, value in record["metrics"].items():
        cells = [name, _num(value)] + ([_num(recorded.get(name))] if recorded else [])
        table.add_row(*cells)
    console.print(table)
    console.print(f"wrote {escape(record['out'])}")
    if record.get("run_record"):
        console.print(f"added to {escape(record['run_record'])} (`deepyard report` shows it)")
    if record.get("embeddings"):
        emb = record["embeddings"]
        console.print(f"wrote {escape(emb['path'])}: {emb['dim']}-dimensional embeddings")


def _num(value: object) -> str:
    return "-" if value is None else f"{value:.6g}" if isinstance(value, float) else str(value)


def explain_checkpoint(
    checkpoint: str = CheckpointArg,
    inputs: str | None = typer.Option(
        None,
        "--inputs",
        help="A Parquet file/folder/URI or a packaged dataset name (its test split); "
        "default: the job's own eval data.",
    ),
    rows: str | None = typer.Option(None, "--rows", help="Row numbers to explain, e.g. 0,5,9."),
    count: int | None = typer.Option(None, "--count", help="Explain the first N rows (default 8)."),
    target: int | None = typer.Option(
        None, "--target", help="Attribute this class (default: each row's predicted class)."
    ),
    out: Path | None = typer.Option(
        None, "--out", help="Folder to write (default: RUN_DIR/explain-step<N>)."
    ),
    run_dir: Path | None = RunOpt,
    device: str = DeviceOpt,
) -> None:
    """Gradient x input attributions: a PNG per image (input | heatmap), or one HTML page
    of shaded tokens for text models; index.json lists each row's prediction."""
    from deepyard.analysis import explain as explaining
    from deepyard.analysis import loaded as loading
    from deepyard.analysis import locate

    with user_errors(), contextlib.redirect_stdout(sys.stderr):
        located = locate.resolve(checkpoint, _warn, run_dir)
        model = loading.load(located, loading.pick_device(device))
        split = loading.read_data(model, inputs, "--inputs")
        picked = explaining.pick_rows(rows, count, len(split.data))
        folder = out or explaining.default_out(model)
        index = explaining.explain(model, split, picked, folder, target)
    for entry in index["rows"]:
        err_console.print(
            f"row {entry['row']}: predicted {entry['predicted']} "
            f"(p={entry['probability']:.3f}), true {entry['true']}"
        )
    written = f"{len(index['files'])} file(s) and index.json"
    err_console.print(f"wrote {written} to {escape(str(folder))}")
    print(folder)
