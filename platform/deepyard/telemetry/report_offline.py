"""The report's "Offline evaluations" section: what `deepyard eval` recorded for the run
(`evals_offline.json`): checkpoint step, data and the task's metrics, one row each."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

RECORD = "evals_offline.json"  # written by deepyard.analysis.offline


def read(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / RECORD
    if not path.is_file():
        return []
    try:
        entries = json.loads(path.read_text())
    except ValueError:
        return []
    return [e for e in entries if isinstance(e, dict)] if isinstance(entries, list) else []


def section(run_dir: Path, fmt: Any, table: Any) -> str:
    """HTML for the section; `fmt` and `table` are the report's cell and table helpers."""
    entries = read(run_dir)
    if not entries:
        return (
            "<p class='empty'>None yet: <code>deepyard eval CHECKPOINT --data ...</code> "
            "adds its result here.</p>"
        )
    names = list(dict.fromkeys(k for e in entries for k in (e.get("metrics") or {})))
    rows = [
        [e.get("step"), e.get("data"), *((e.get("metrics") or {}).get(n) for n in names)]
        for e in entries
    ]
    sources = "".join(
        f"<li>step {html.escape(str(e.get('step')))}: {html.escape(str(e.get('checkpoint')))}"
        f" on {html.escape(str(e.get('device', 'cpu')))}</li>"
        for e in entries
    )
    return str(table(["step", "data", *names], rows)) + f"<ul class='note'>{sources}</ul>"
