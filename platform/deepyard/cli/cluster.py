"""`deepyard submit | jobs list | status | logs | stop`: jobs on an existing Ray cluster."""

from __future__ import annotations

import time
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from deepyard.cli import k8s as k8s_options
from deepyard.cli.errors import err_console, user_errors

AddressOption = typer.Option(
    None,
    "--address",
    help="The cluster's Ray dashboard, http://HEAD:8265 (default: $DEEPYARD_ADDRESS).",
)
TokenOption = typer.Option(
    None,
    "--token-file",
    help="File holding the cluster's auth token (default: $RAY_AUTH_TOKEN, "
    "$RAY_AUTH_TOKEN_PATH, ~/.ray/auth_token).",
)
jobs_app = typer.Typer(help="Jobs on a Ray cluster.", no_args_is_help=True)


def submit(
    file: Path = typer.Argument(..., help="Job spec YAML file."),
    overrides: list[str] = typer.Option([], "--set", help="Override a spec field by path."),
    address: str | None = AddressOption,
    token_file: Path | None = TokenOption,
    working_dir: Path | None = typer.Option(
        None, "--working-dir", help="A directory uploaded with the job (your own code)."
    ),
    k8s: bool = typer.Option(
        False,
        "--k8s",
        help="Create a TrainJob (or Sweep) on the current Kubernetes context instead "
        "(same as `deepyard k8s submit`), placed by the options below.",
    ),
    image: str | None = k8s_options.ImageOption,
    namespace: str | None = k8s_options.NamespaceOption,
    queue: str | None = k8s_options.QueueOption,
    priority_class: str | None = k8s_options.PriorityOption,
    workload_priority_class: str | None = k8s_options.WorkloadPriorityOption,
    context: str | None = k8s_options.ContextOption,
) -> None:
    """Validate a job here, then run it on the cluster; prints the job id. With --k8s, the
    placement options override the spec's `kubernetes:` section."""
    from deepyard import spec as specs
    from deepyard.launch.remote import connect

    given = k8s_options.placement(image, namespace, queue, priority_class, workload_priority_class)
    if k8s:  # Kubernetes: the same spec as a TrainJob custom resource (deepyard.cli.k8s)
        if working_dir is not None or address is not None:
            err_console.print("warning: --working-dir and --address do not apply with --k8s")
        k8s_options.submit_resource(file, overrides, given, context)
        return
    _warn_k8s_only(given, context)
    with user_errors():
        spec = specs.load(file, overrides)
        cluster = connect(address, token_file)
        job_id = cluster.submit(spec, working_dir)
    err_console.print(
        f"submitted [bold]{escape(job_id)}[/] to {escape(cluster.address)}; follow it with "
        f"`deepyard logs {escape(job_id)} --follow`"
    )
    print(job_id)


def _warn_k8s_only(given: dict[str, str], context: str | None) -> None:
    """Placement options without --k8s do nothing: say so rather than ignore them."""
    from deepyard.k8s.placement import OPTIONS

    ignored = [OPTIONS[k] for k in given if k != "image"]  # image: maybe from $DEEPYARD_IMAGE
    ignored += ["--context"] if context else []
    if ignored:
        verb = "applies" if len(ignored) == 1 else "apply"
        err_console.print(f"warning: {', '.join(ignored)} {verb} only with --k8s; ignored")


@jobs_app.command("list")
def jobs_list(
    address: str | None = AddressOption,
    token_file: Path | None = TokenOption,
    as_json: bool = typer.Option(False, "--json", help="One JSON object per job, for scripts."),
) -> None:
    """Every job the cluster knows, oldest first."""
    import dataclasses
    import json

    from deepyard.launch.remote import connect

    with user_errors():
        rows = connect(address, token_file).jobs()
    if as_json:
        for row in rows:
            print(json.dumps(dataclasses.asdict(row)))
        return
    table = Table("status", "job", "started", "message")
    table.add_column("id", no_wrap=True)  # ids are copied into other commands: never wrapped
    for row in rows:
        started = ""
        if row.start_s:
            started = time.strftime("%m-%d %H:%M:%S", time.localtime(row.start_s))
        table.add_row(row.status, escape(row.job), started, escape(row.message), escape(row.id))
    Console().print(table)


def status(
    job_id: str = typer.Argument(..., help="The id `deepyard submit` printed."),
    address: str | None = AddressOption,
    token_file: Path | None = TokenOption,
) -> None:
    """One job's state: PENDING, RUNNING, SUCCEEDED, FAILED or STOPPED, and why."""
    from deepyard.launch.remote import connect

    with user_errors():
        row = connect(address, token_file).status(job_id)
    line = f"{row.id}: {row.status}"
    if row.message:
        line += f" ({row.message})"
    print(line)


def logs(
    job_id: str = typer.Argument(..., help="The id `deepyard submit` printed."),
    follow: bool = typer.Option(False, "--follow", "-f", help="Stream until the job ends."),
    address: str | None = AddressOption,
    token_file: Path | None = TokenOption,
) -> None:
    """A job's output (the driver's: progress, summary, errors)."""
    from deepyard.launch.remote import connect

    with user_errors():
        cluster = connect(address, token_file)
        if not follow:
            print(cluster.logs(job_id), end="")
            return
        for chunk in cluster.follow(job_id):
            print(chunk, end="", flush=True)


def stop(
    job_id: str = typer.Argument(..., help="The id `deepyard submit` printed."),
    address: str | None = AddressOption,
    token_file: Path | None = TokenOption,
) -> None:
    """Stop a job (its workers get SIGTERM: it checkpoints at the next step if it can)."""
    from deepyard.launch.remote import connect

    with user_errors():
        stopped = connect(address, token_file).stop(job_id)
    print(f"{job_id}: {'stop requested' if stopped else 'already ended'}")
