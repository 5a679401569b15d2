"""The `deepyard` command. Thin: each command validates at the edge and delegates."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from deepyard.cli import analysis, cluster
from deepyard.cli.checkpoints import app as checkpoint_app
from deepyard.cli.errors import err_console, user_errors
from deepyard.cli.k8s import app as k8s_app
from deepyard.cli.sweeps import app as sweep_app

app = typer.Typer(
    help="Distributed deep-learning training on Ray and DeepSpeed from one YAML job spec.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
spec_app = typer.Typer(help="Validate job specs and print their JSON Schema.", no_args_is_help=True)
data_app = typer.Typer(
    help="Prepare packaged datasets or convert your own as Parquet.", no_args_is_help=True
)
models_app = typer.Typer(help="The registered model families.", no_args_is_help=True)
app.add_typer(spec_app, name="spec")
app.add_typer(data_app, name="data")
app.add_typer(models_app, name="models")
app.add_typer(checkpoint_app, name="checkpoint")
app.add_typer(sweep_app, name="sweep")
app.add_typer(k8s_app, name="k8s")


SetOption = typer.Option(
    [], "--set", help="Override a spec field by dotted path, e.g. --set optimizer.lr=3e-4."
)


@app.command()
def run(
    file: Path = typer.Argument(..., help="Job spec YAML file."),
    overrides: list[str] = SetOption,
    address: str | None = typer.Option(
        None, "--address", help="Join a running Ray cluster instead of starting one."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the run summary as JSON on stdout."),
    restart: bool = typer.Option(
        False,
        "--restart",
        help="Start fresh in a new checkpoint lineage instead of resuming (old ones are kept).",
    ),
) -> None:
    """Train a job on an embedded local Ray (or --address) and print its summary.

    With checkpointing on, rerunning the same command resumes from the newest valid
    checkpoint. On SIGTERM the job checkpoints at the next step and exits with 143.
    """
    from deepyard.cli.run import run as run_job

    with user_errors():
        try:
            summary = run_job(file, overrides, address, as_json, restart)
        except KeyboardInterrupt:
            err_console.print("stopped by Ctrl-C; workers and the embedded Ray were shut down")
            raise typer.Exit(130) from None
    if summary["status"] == "preempted":
        saved = (summary.get("checkpoints") or {}).get("last_step")
        err_console.print(
            f"preempted at step {summary['steps']}: "
            + (
                f"checkpoint step {saved} saved; rerun the same command to resume"
                if saved
                else "checkpointing is off, so the progress is lost (set checkpoint.every_steps)"
            )
        )
        raise typer.Exit(143)


@spec_app.command("validate")
def spec_validate(
    file: Path = typer.Argument(..., help="Job spec YAML file."),
    overrides: list[str] = SetOption,
) -> None:
    """Check a job spec; print the resolved spec, or every problem with its fix."""
    from deepyard import spec as specs

    with user_errors():
        spec = specs.load(file, overrides)
    err_console.print(f"[green]valid[/]: {escape(str(file))} (hash {specs.spec_hash(spec)})")
    import yaml

    print(yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False), end="")


@spec_app.command("schema")
def spec_schema() -> None:
    """Print the job spec's JSON Schema."""
    from deepyard import spec as specs

    print(json.dumps(specs.json_schema(), indent=2))


@data_app.command("prepare")
def data_prepare(
    name: str = typer.Argument(
        ...,
        help="Packaged dataset: digits, fashion-mnist, mnist (images); rotten-tomatoes (text); "
        "airline, co2 (time series).",
    ),
    out_dir: Path = typer.Argument(
        ..., help="Directory for train.parquet and test.parquet (time series: series.parquet)."
    ),
) -> None:
    """Convert a dataset that ships in a package into Parquet train/test splits."""
    from deepyard.data import packaged
    from deepyard.errors import DataError

    with user_errors():
        try:
            paths = packaged.prepare(name, out_dir)
        except ValueError as exc:
            raise DataError(str(exc)) from None
    for path in paths:
        err_console.print(f"wrote {escape(str(path))}")


@data_app.command("convert")
def data_convert(
    fmt: str = typer.Argument(..., metavar="FORMAT", help="csv, jsonl or images."),
    src: Path = typer.Argument(
        ..., metavar="SRC", help="A CSV or JSON Lines file, or a folder SRC/<class_name>/*.png|jpg."
    ),
    out: Path = typer.Argument(
        ...,
        metavar="OUT",
        help="Parquet file to write (a folder of part-*.parquet for big inputs).",
    ),
    label: str | None = typer.Option(None, "--label", help="csv/jsonl: the class column."),
    features: str | None = typer.Option(
        None,
        "--features",
        help="csv/jsonl: numeric columns packed into `features`, comma-separated "
        "(default: every numeric column but the label, none with --text).",
    ),
    text: str | None = typer.Option(None, "--text", help="csv/jsonl: a text column to keep."),
    label_names: str | None = typer.Option(
        None,
        "--label-names",
        help="csv/jsonl: class names in id order, comma-separated (default: a text label "
        "column's values, sorted).",
    ),
    size: str | None = typer.Option(
        None, "--size", help="images: HxW to resize to (default: the first image's size)."
    ),
    channels: int | None = typer.Option(
        None, "--channels", help="images: 1 (grayscale) or 3 (RGB); default: the first image's."
    ),
) -> None:
    """Convert a CSV, JSON Lines file or image folder into deepyard's Parquet layout."""
    from deepyard.data.convert import ConvertOptions, convert

    with user_errors():
        options = ConvertOptions(
            label=label,
            features=_comma_list(features),
            text=text,
            label_names=_comma_list(label_names),
            size=_parse_size(size),
            channels=channels,
        )
        paths = convert(fmt, src, out, options)
    for path in paths:
        err_console.print(f"wrote {escape(str(path))}")


def _comma_list(value: str | None) -> list[str] | None:
    return None if value is None else [v.strip() for v in value.split(",") if v.strip()]


def _parse_size(value: str | None) -> tuple[int, int] | None:
    from deepyard.errors import DataError

    if value is None:
        return None
    height, _, width = value.lower().partition("x")
    if not (height.isdigit() and width.isdigit() and int(height) > 0 and int(width) > 0):
        raise DataError(f"--size {value}: use HEIGHTxWIDTH in pixels, e.g. --size 28x28")
    return int(height), int(width)


@models_app.command("list")
def models_list() -> None:
    """Every registered model: family, parameters with its default arguments (for the
    data its example job trains on), and the example job that trains it."""
    from rich.markup import escape

    from deepyard import models

    table = Table("name", "family", "parameters", "summary")
    table.add_column("example job", overflow="fold")  # a path to copy: never elided
    for name in models.names():
        entry = models.get(name)
        try:
            parameters = f"{models.num_parameters(name):,}"
        except ValueError as exc:  # its package is not installed: the error says how
            parameters = escape(f"- ({exc})")  # `deepyard[vision]` is not rich markup
        table.add_row(name, entry.family, parameters, entry.summary, entry.example_job or "-")
    Console().print(table)


@app.command()
def report(
    run_dir: Path = typer.Argument(
        ..., metavar="RUN_DIR", help="A run's folder: OUTPUT_DIR/NAME/RUN_ID (has summary.json)."
    ),
    out: Path | None = typer.Option(
        None, "--out", help="HTML file to write (default: RUN_DIR/report.html)."
    ),
) -> None:
    """Write one self-contained HTML page of a run's plots: loss, throughput, step time,
    data wait, evals, checkpoints and restarts. Opens offline; prints the path written."""
    from deepyard.telemetry.report import write_report

    with user_errors():
        path = write_report(run_dir, out)
    print(path)


# Using a finished checkpoint.
app.command("eval")(analysis.eval_checkpoint)
app.command("explain")(analysis.explain_checkpoint)


def main() -> None:
    app()


# Jobs on an existing Ray cluster (after `run`, so `deepyard --help` lists run first).
for command in (cluster.submit, cluster.status, cluster.logs, cluster.stop):
    app.command()(command)
app.add_typer(cluster.jobs_app, name="jobs")


if __name__ == "__main__":
    main()
