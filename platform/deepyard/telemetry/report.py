"""Run reports: a finished run directory → one self-contained HTML page to look at.

Data flow: `RunRecorder` writes summary.json, history.parquet, evals.json and
events.jsonl → `load_run` reads them back → one Plotly figure per question (loss, the
task's own per-step figures such as a GAN's two losses, throughput, step time, data wait,
evals, checkpoints) and tables (start-up, recoveries)
→ `write_report` writes the page with plotly.js inlined once, so it opens offline.

Each figure's data travels as JSON in a `<script type="application/json">` block next to
its plot, as plain lists copied from the run's files: what the page draws can be read
(and tested) without a browser.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from plotly.io.json import to_json_plotly
from plotly.offline import get_plotlyjs

from deepyard.errors import DataError
from deepyard.telemetry import report_offline
from deepyard.telemetry.report_figures import FIGURES, Figure
from deepyard.telemetry.report_run import RunFiles, load_run, redone_rows

PLOT_CONFIG = {"responsive": True, "displaylogo": False}
RECOVERY_COLUMNS = {  # header → key of each summary.recoveries entry
    "attempt": "attempt",
    "cause": "cause",
    "detect (s)": "detect_s",
    "resumed at step": "resumed_step",
    "restore (s)": "restore_s",
    "steps redone": "steps_redone",
    "to first step (s)": "first_step_s",
}


def _fmt(value: Any, unit: str = "") -> str:
    if isinstance(value, float):
        text = f"{value:,.4g}" if abs(value) < 1e4 else f"{value:,.0f}"
    else:
        text = "-" if value is None else str(value)
    return html.escape(text + (f" {unit}" if unit and value is not None else ""))


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{_fmt(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def key_figures(run: RunFiles) -> list[tuple[str, str]]:
    s = run.summary
    # The worker reports training time and throughput of its own (the last) attempt.
    last = " (last attempt)" if s.get("attempts", 1) > 1 and "steps_this_attempt" in s else ""
    recorded = max(run.column("step"), default=None)  # a failed run's summary has no steps
    cards = [
        ("steps", _fmt(s.get("steps", recorded))),
        ("training time" + last, _fmt(s.get("train_time_s"), "s")),
        ("wall time", _fmt(s.get("wall_time_s"), "s")),
        ("mean throughput" + last, _fmt(s.get("samples_per_s"), "samples/s")),
        ("time to first step", _fmt(s.get("time_to_first_step_s"), "s")),
        ("attempts", _fmt(s.get("attempts", 1))),
        ("final loss", _fmt(s.get("final_loss"))),
    ]
    for key, label in (("goodput", "goodput"), ("mfu", "MFU")):
        if isinstance(s.get(key), (int, float)):
            cards.append((label, f"{s[key]:.1%}"))
    redone = len(redone_rows(run))
    if redone:
        cards.append(("steps redone", _fmt(redone)))
    evals = s.get("eval") or {}
    cards += [(f"eval {k}", _fmt(v)) for k, v in evals.items() if k != "num_samples"]
    return cards


def startup_table(run: RunFiles) -> str:
    columns = {1: dict(run.summary.get("startup_s") or {})}
    for attempt in run.attempts()[1:]:
        columns[attempt] = _restart_phases(run, attempt)
    names = list(dict.fromkeys(name for phases in columns.values() for name in phases))
    if not names:
        return "<p class='empty'>No start-up phases recorded.</p>"
    rows = [[name, *(phases.get(name) for phases in columns.values())] for name in names]
    rows.append(["total", *(round(sum(p.values()), 3) for p in columns.values())])
    headers = ["phase", *(f"attempt {a} (s)" for a in columns)]
    note = (
        "<p class='note'>Seconds since the previous phase. Attempt 1 counts from the "
        "command's start; later attempts from the previous attempt's last step.</p>"
    )
    return _table(headers, rows) + (note if len(columns) > 1 else "")


def _restart_phases(run: RunFiles, attempt: int) -> dict[str, float]:
    times = run.column("t")
    earlier = [i for i, a in enumerate(run.column("attempt")) if a < attempt]
    marks = [
        (e["name"], e["t"])
        for e in run.events
        if e.get("type") == "phase" and e.get("attempt") == attempt
    ]
    marks += [("first_step", times[i]) for i in run.rows_of(attempt)[:1]]
    marks.sort(key=lambda m: m[1])
    previous = times[earlier[-1]] if earlier else (marks[0][1] if marks else 0.0)
    phases = {}
    for name, t in marks:
        phases[name], previous = round(t - previous, 3), t
    return phases


def recoveries_table(run: RunFiles) -> str:
    recoveries = run.summary.get("recoveries") or []
    if not recoveries:
        return "<p class='empty'>No restarts: the run ran in one attempt.</p>"
    rows = [[r.get(key) for key in RECOVERY_COLUMNS.values()] for r in recoveries]
    return _table(list(RECOVERY_COLUMNS), rows)


def _figure_section(key: str, title: str, fig: Figure | None, empty: str | None) -> str:
    """The figure's section; where there is no figure, `empty` says why (None: no section,
    for a figure only some tasks have)."""
    if fig is None:
        if empty is None:
            return ""
        return f"<section><h2>{title}</h2><p class='empty'>{html.escape(empty)}</p></section>"
    data = to_json_plotly(fig).replace("</", "<\\/")
    return (
        f"<section><h2>{title}</h2><div class='plot' id='fig-{key}'></div>"
        f"<script type='application/json' id='fig-{key}-data'>{data}</script></section>"
    )


def render(run: RunFiles) -> str:
    s = run.summary
    status = str(s.get("status", "unknown"))
    title = f"{s.get('job', run.run_dir.parent.name)} · {s.get('run_id', run.run_dir.name)}"
    cards = "".join(
        f"<div class='card'><div class='k'>{html.escape(k)}</div><div class='v'>{v}</div></div>"
        for k, v in key_figures(run)
    )
    error = f"<pre class='error'>{html.escape(s['error'])}</pre>" if s.get("error") else ""
    plots = "".join(_figure_section(k, t, build(run), empty) for k, t, build, empty in FIGURES)
    spec = html.escape(run.spec_text or "spec.yaml is missing")
    return _PAGE.format(
        title=html.escape(title),
        status=html.escape(status),
        status_class="ok" if status == "succeeded" else "bad",
        meta=html.escape(
            f"spec hash {run.spec_hash() or '-'} · {s.get('num_parameters') or '-'} parameters"
            f" · {run.run_dir}"
        ),
        cards=cards,
        error=error,
        plots=plots,
        spec=spec,
        plotlyjs=get_plotlyjs(),
        startup=startup_table(run),
        recoveries=recoveries_table(run),
        offline=report_offline.section(run.run_dir, _fmt, _table),
        config=json.dumps(PLOT_CONFIG),
    )


def write_report(run_dir: Path, out: Path | None = None) -> Path:
    """Read RUN_DIR's records and write the HTML report (default RUN_DIR/report.html)."""
    page = render(load_run(run_dir))
    out = out or run_dir / "report.html"
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(page, encoding="utf-8")
    except OSError as exc:
        raise DataError(f"{out}: cannot write the report ({exc.strerror}); pick --out") from None
    return out


_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 1200px;
  padding: 0 1rem; color: #222; }}
h1 {{ margin-bottom: .2rem; }} .meta {{ color: #666; margin-top: 0; }}
.badge {{ font-size: .8em; padding: .15em .6em; border-radius: 1em; color: #fff;
  vertical-align: middle; }}
.ok {{ background: #2ca02c; }} .bad {{ background: #d62728; }}
.cards {{ display: flex; flex-wrap: wrap; gap: .6rem; margin: 1rem 0; }}
.card {{ border: 1px solid #ddd; border-radius: 6px; padding: .5rem .8rem; min-width: 8rem; }}
.card .k {{ color: #666; font-size: .8em; }} .card .v {{ font-size: 1.2em; font-weight: 600; }}
.error {{ background: #fdecea; border-left: 4px solid #d62728; padding: .6rem;
  white-space: pre-wrap; }}
section {{ margin: 1.5rem 0; }} .empty, .note {{ color: #666; font-style: italic; }}
table {{ border-collapse: collapse; }} td, th {{ border-bottom: 1px solid #eee;
  padding: .3rem .8rem; text-align: left; }} td {{ font-variant-numeric: tabular-nums; }}
</style>
<script>{plotlyjs}</script>
</head><body>
<h1>{title} <span class="badge {status_class}">{status}</span></h1>
<p class="meta">{meta}</p>
<div class="cards">{cards}</div>
{error}
{plots}
<section><h2>Offline evaluations</h2>{offline}</section>
<section><h2>Start-up</h2>{startup}</section>
<section><h2>Recoveries</h2>{recoveries}</section>
<section><details><summary>Resolved job spec</summary><pre>{spec}</pre></details></section>
<script>
document.querySelectorAll("div.plot").forEach(function (div) {{
  var fig = JSON.parse(document.getElementById(div.id + "-data").textContent);
  Plotly.newPlot(div, fig.data, fig.layout, {config});
}});
</script>
</body></html>
"""
