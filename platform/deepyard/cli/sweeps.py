"""`deepyard sweep validate SWEEP.yaml`: check a sweep spec and show what it would run."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from deepyard.cli.errors import err_console, user_errors

if TYPE_CHECKING:
    from deepyard.spec.job import JobSpec
    from deepyard.spec.sweep import SweepSpec

app = typer.Typer(
    help="Hyperparameter sweeps: many trials of one job, searched by Ray Tune.",
    no_args_is_help=True,
)
MetricsPortOption = typer.Option(
    None,
    "--metrics-port",
    min=0,
    max=65535,
    help="Serve the sweep's /metrics here (0: any free port), with every running trial's "
    "series merged in: one scrape target for the whole sweep (Kubernetes uses 9400).",
)
MetricsAddressOption = typer.Option(
    "127.0.0.1", "--metrics-address", help="Listen address of --metrics-port (loopback)."
)
SetOption = typer.Option(
    [],
    "--set",
    help="Override a sweep field by dotted path: --set budget.max_trials=16, "
    "--set space.optimizer.lr.low=1e-5, --set job.training.max_steps=100.",
)


@app.command("validate")
def validate(
    file: Path = typer.Argument(..., help="Sweep spec YAML file."),
    overrides: list[str] = SetOption,
) -> None:
    """Check a sweep spec; print its space and trial count, or every problem with its fix."""
    import yaml

    from deepyard.spec.sweep_load import load_sweep

    with user_errors():
        sweep = load_sweep(file, overrides)
    err_console.print(f"[green]valid[/]: {escape(str(file))}: {escape(_trials_line(sweep))}")
    Console(stderr=True).print(_space_table(sweep))
    print(yaml.safe_dump(_resolved(sweep), sort_keys=False), end="")


@app.command("run")
def run(
    file: Path = typer.Argument(..., help="Sweep spec YAML file."),
    overrides: list[str] = SetOption,
    address: str | None = typer.Option(
        None, "--address", help="Join a running Ray cluster instead of starting one."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the sweep summary as JSON."),
    metrics_port: int | None = MetricsPortOption,
    metrics_address: str = MetricsAddressOption,
) -> None:
    """Run a sweep on Ray Tune with a live table of trials; the best trial's job spec is
    written as best.yaml. Rerunning the same command resumes a sweep whose driver stopped."""
    metrics_at = None if metrics_port is None else (metrics_address, metrics_port)
    _run(file, overrides, address, as_json, resume_only=False, metrics_at=metrics_at)


@app.command("resume")
def resume(
    file: Path = typer.Argument(..., help="The sweep's spec YAML file (as it was run)."),
    overrides: list[str] = SetOption,
    address: str | None = typer.Option(None, "--address", help="Join a running Ray cluster."),
    as_json: bool = typer.Option(False, "--json", help="Print the sweep summary as JSON."),
    metrics_port: int | None = MetricsPortOption,
    metrics_address: str = MetricsAddressOption,
) -> None:
    """Finish a sweep whose driver stopped: finished trials are kept, unfinished ones
    resume from their checkpoints, and the searcher continues where it was."""
    metrics_at = None if metrics_port is None else (metrics_address, metrics_port)
    _run(file, overrides, address, as_json, resume_only=True, metrics_at=metrics_at)


@app.command("status")
def status(
    target: Path = typer.Argument(..., help="A sweep spec YAML file, or its sweep directory."),
    as_json: bool = typer.Option(False, "--json", help="Print status.json as it is."),
) -> None:
    """Show a sweep's trials, best result and spend, from another shell."""
    import json

    from deepyard.sweep.status import read_status, stale_note, table

    with user_errors():
        directory = _sweep_directory(target)
        current = read_status(directory)
        if current is None:
            from deepyard.errors import SpecError

            raise SpecError(f"no sweep status at {directory}; has the sweep started?", "sweep")
    if as_json:
        print(json.dumps(current, indent=1))
        return
    Console().print(table(current))
    note = stale_note(current)
    if note:
        err_console.print(f"[yellow]note:[/] {escape(note)}")


def _run(
    file: Path,
    overrides: list[str],
    address: str | None,
    as_json: bool,
    resume_only: bool,
    metrics_at: tuple[str, int] | None = None,
) -> None:
    import json

    from deepyard.spec.sweep_load import load_sweep
    from deepyard.sweep.runner import SweepRunner

    with user_errors():
        sweep = load_sweep(file, overrides)
        err_console.print(f"sweep {escape(sweep.name)}: {escape(_trials_line(sweep))}")
        summary = SweepRunner(sweep, err_console, address, metrics_at=metrics_at).run(resume_only)
    best = summary["best"]
    if best is not None:
        metric = summary["metric"]
        err_console.print(
            f"[green]best[/]: trial {best['id']} {metric} {best[metric]:.4f} "
            f"({escape(str(best['config']))}); job spec: {escape(summary['best_spec'])}"
        )
    if summary["exhausted"]:
        err_console.print(f"[yellow]budget[/]: {escape(summary['exhausted'])}")
    if as_json:
        print(json.dumps(summary, default=str))
    if summary["state"] == "interrupted":
        err_console.print(
            "[yellow]interrupted[/]: unfinished trials are kept; run the same command again "
            "to resume the sweep"
        )
        raise typer.Exit(130)


def _sweep_directory(target: Path) -> Path:
    if target.is_dir():
        return target
    from deepyard.spec.sweep_load import load_sweep
    from deepyard.sweep.runner import sweep_dir

    return sweep_dir(load_sweep(target))


def _resolved(sweep: SweepSpec) -> dict[str, Any]:
    """The sweep as validated: the base job by name and hash, steps and trials resolved."""
    from deepyard.spec import spec_hash

    dumped = sweep.model_dump(mode="json", exclude={"job"})
    dumped["space"] = {
        path: {"type": param["type"], **param} for path, param in dumped["space"].items()
    }
    if "max_steps" in dumped["scheduler"]:
        dumped["scheduler"]["max_steps"] = sweep.max_steps
    trials = {"grid_points": sweep.grid_size, "samples": sweep.num_samples}
    return {
        "name": dumped.pop("name"),
        "job": {"name": sweep.job.name, "hash": spec_hash(sweep.job)},
        **dumped,
        "trials": {**trials, "total": sweep.num_trials},
    }


def _trials_line(sweep: SweepSpec) -> str:
    grid = (
        f" (grid of {sweep.grid_size} x {sweep.num_samples} samples)" if sweep.grid_size > 1 else ""
    )
    at_once = sweep.budget.max_concurrent
    parallel = f", up to {at_once} at once" if at_once else ""
    return (
        f"{sweep.num_trials} trials{grid} of job {sweep.job.name}{parallel}; "
        f"{sweep.algorithm} search, {sweep.scheduler.name} scheduler, "
        f"{sweep.mode} {sweep.metric}"
    )


def _space_table(sweep: SweepSpec) -> Table:
    from deepyard.spec.sweep import ChoiceParam, GridParam, RandIntParam

    table = Table("parameter", "type", "range or values", "now", title="search space")
    for path, param in sweep.space.items():
        if isinstance(param, ChoiceParam | GridParam):
            shown = ", ".join(repr(v) for v in param.values)
        elif isinstance(param, RandIntParam):
            shown = f"{param.low} .. {param.high - 1} (high {param.high} exclusive)"
        else:
            shown = f"{param.low:g} .. {param.high:g}"
        table.add_row(path, param.type, escape(shown), escape(_current(sweep.job, path)))
    return table


def _current(job: JobSpec, path: str) -> str:
    """The base job's value at a dotted path (what the sweep replaces)."""
    node: Any = job.model_dump(mode="json")
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return "(default)"
        node = node[part]
    return repr(node)
