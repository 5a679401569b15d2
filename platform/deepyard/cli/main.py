"""The `deepyard` command. Thin: each command validates at the edge and delegates."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from deepyard.cli.errors import err_console, user_errors

app = typer.Typer(
    help="Distributed deep-learning training on Ray and DeepSpeed from one YAML job spec.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
spec_app = typer.Typer(help="Validate job specs and print their JSON Schema.", no_args_is_help=True)
data_app = typer.Typer(help="Prepare datasets as Parquet.", no_args_is_help=True)
models_app = typer.Typer(help="The registered model families.", no_args_is_help=True)
app.add_typer(spec_app, name="spec")
app.add_typer(data_app, name="data")
app.add_typer(models_app, name="models")

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
) -> None:
    """Train a job on an embedded local Ray (or --address) and print its summary."""
    from deepyard.cli.run import run as run_job

    with user_errors():
        try:
            run_job(file, overrides, address, as_json)
        except KeyboardInterrupt:
            err_console.print("stopped by Ctrl-C; workers and the embedded Ray were shut down")
            raise typer.Exit(130) from None


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
    name: str = typer.Argument(..., help="Packaged dataset: fashion-mnist or digits."),
    out_dir: Path = typer.Argument(..., help="Directory for train.parquet and test.parquet."),
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


@models_app.command("list")
def models_list() -> None:
    """Every registered model with its family and example job."""
    from deepyard import models

    table = Table("name", "family", "summary", "example job")
    for name in models.names():
        entry = models.get(name)
        table.add_row(name, entry.family, entry.summary, entry.example_job or "-")
    Console().print(table)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
