"""`deepyard checkpoint list|verify|export URI`: inspect and use a checkpoint location."""

from __future__ import annotations

import datetime
import json
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from deepyard.cli.errors import err_console, user_errors

app = typer.Typer(
    help="List, verify and export the checkpoints under a checkpoint.uri.", no_args_is_help=True
)
UriArg = typer.Argument(..., help="The job's checkpoint.uri: a path, file://… or s3://…")
LineageOpt = typer.Option(None, "--lineage", help="A lineage name (default: the newest).")


@app.command("list")
def list_checkpoints(uri: str = UriArg, as_json: bool = typer.Option(False, "--json")) -> None:
    """Every checkpoint of every lineage: step, state, metrics, size and age."""
    from deepyard.checkpoint import catalog
    from deepyard.checkpoint.store import Store

    with user_errors():
        store = Store.open(uri)
        rows: list[dict[str, Any]] = []
        for lineage in catalog.lineages(store):
            for ckpt in catalog.checkpoints(store, lineage):
                manifest = ckpt.manifest or {}
                rows.append(
                    {
                        "lineage": lineage,
                        "step": ckpt.step,
                        "state": "published" if ckpt.published else "incomplete",
                        "world_size": manifest.get("world_size"),
                        "size_bytes": manifest.get("size_bytes"),
                        "created": manifest.get("created"),
                        "metrics": manifest.get("metrics") or {},
                    }
                )
    if as_json:
        print(json.dumps(rows))
        return
    if not rows:
        err_console.print(f"no checkpoints under {escape(uri)}")
        raise typer.Exit(1)
    table = Table(title=f"checkpoints under {escape(uri)}")
    for column in ("lineage", "step", "state", "workers", "size", "saved", "metrics"):
        table.add_column(column, justify="right" if column in ("step", "size") else "left")
    for row in rows:
        shown = {k: v for k, v in row["metrics"].items() if k in ("accuracy", "mse", "loss")}
        table.add_row(
            str(row["lineage"]),
            str(row["step"]),
            str(row["state"]),
            str(row["world_size"] or ""),
            _size(row["size_bytes"]),
            _when(row["created"]),
            ", ".join(f"{k} {v:.4g}" for k, v in shown.items()),
        )
    Console().print(table)


@app.command("verify")
def verify(uri: str = UriArg, lineage: str | None = LineageOpt) -> None:
    """Check every published checkpoint's files against its manifest (sizes and sha256)."""
    from deepyard.checkpoint import catalog
    from deepyard.checkpoint.manifest import problems
    from deepyard.checkpoint.store import Store

    with user_errors():
        store = Store.open(uri)
        names = [lineage] if lineage else catalog.lineages(store)
        bad = checked = 0
        for name in names:
            for ckpt in catalog.checkpoints(store, name):
                if not ckpt.published:
                    err_console.print(f"[yellow]incomplete[/] {name} step {ckpt.step} (ignored)")
                    continue
                checked += 1
                found = problems(store, ckpt.prefix, ckpt.manifest)
                bad += bool(found)
                for problem in found:
                    err_console.print(f"[red]bad[/] {escape(problem)}")
                if not found:
                    n = len((ckpt.manifest or {}).get("files", {}))
                    err_console.print(f"[green]ok[/] {name} step {ckpt.step} ({n} files)")
    if checked == 0:
        err_console.print(f"no published checkpoints under {escape(uri)}")
        raise typer.Exit(1)
    if bad:
        err_console.print(f"{bad} of {checked} checkpoints failed verification")
        raise typer.Exit(1)


@app.command("export")
def export(
    uri: str = UriArg,
    out: Path = typer.Option(..., "--out", help="The .safetensors file to write."),
    step: int | None = typer.Option(None, "--step", help="Default: the newest valid."),
    lineage: str | None = LineageOpt,
) -> None:
    """Consolidated fp32 weights (ZeRO shards merged) as safetensors, for use anywhere."""
    from deepyard.checkpoint import catalog
    from deepyard.checkpoint.export import export_safetensors
    from deepyard.checkpoint.manifest import problems
    from deepyard.checkpoint.store import Store
    from deepyard.errors import CheckpointError

    with user_errors():
        store = Store.open(uri)
        names = catalog.lineages(store)
        chosen = lineage or (names[-1] if names else None)
        if chosen is None or chosen not in names:
            raise CheckpointError(
                f"no lineage {chosen!r} under {uri}; `deepyard checkpoint list {uri}` shows them"
            )
        warn = lambda message: err_console.print(f"[yellow]warning[/]: {escape(message)}")  # noqa: E731
        if step is None:
            ckpt = catalog.newest_valid(store, chosen, warn)
        else:
            ckpt = next((c for c in catalog.checkpoints(store, chosen) if c.step == step), None)
            bad = problems(store, ckpt.prefix, ckpt.manifest) if ckpt is not None else []
            if bad:
                raise CheckpointError(
                    f"checkpoint step {step} of {chosen} fails verification: {bad[0]}"
                )
        if ckpt is None:
            raise CheckpointError(
                f"no valid checkpoint{f' at step {step}' if step else ''} in lineage {chosen} "
                f"under {uri}; `deepyard checkpoint list {uri}` shows what there is"
            )
        written = export_safetensors(store, ckpt, out)
    err_console.print(
        f"wrote {escape(str(out))}: {written['tensors']} tensors, "
        f"{written['parameters']:,} parameters, step {written['step']}"
    )


def _size(size: int | None) -> str:
    if size is None:
        return ""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024  # type: ignore[assignment]
    return ""


def _when(created: float | None) -> str:
    if created is None:
        return ""
    return datetime.datetime.fromtimestamp(created).strftime("%Y-%m-%d %H:%M:%S")
