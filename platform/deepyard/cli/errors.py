"""User errors become one or two lines on stderr and an exit code, never a traceback."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import typer
from rich.console import Console
from rich.markup import escape

from deepyard.errors import DeepyardError

# soft_wrap: never break a path or a message with hard newlines (logs, pipes, copy-paste).
err_console = Console(stderr=True, highlight=False, soft_wrap=True)


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    try:
        yield
    except DeepyardError as exc:
        # escape: messages quote user values and regex patterns, which hold `[...]`.
        err_console.print(f"[bold red]error:[/] {escape(str(exc))}")
        raise typer.Exit(exc.exit_code) from None
