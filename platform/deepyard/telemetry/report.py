"""Run reports: a finished run directory → one self-contained HTML page to look at.

Data flow: `RunRecorder` writes summary.json, history.parquet, evals.json and
events.jsonl → `load_run` reads them back → one Plotly figure per question (loss,
throughput, step time, data wait, evals, checkpoints) and tables (start-up, recoveries)
→ `write_report` writes the page with plotly.js inlined once, so it opens offline.

Each figure's data travels as JSON in a `<script type="application/json">` block next to
its plot, as plain lists copied from the run's files: what the page draws can be read
(and tested) without a browser.
"""

from __future__ import annotations

import html
import itertools
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from plotly.io.json import to_json_plotly
from plotly.offline import get_plotlyjs

from deepyard.errors import DataError

FAILED_COLOR = "#d62728"
RESUMED_COLOR = "#2ca02c"
PERCENTILES = (50, 95, 99)
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


@dataclass(frozen=True)
class RunFiles:
    """What one run directory holds; optional files are empty when absent."""

    run_dir: Path
    summary: dict[str, Any]
    history: dict[str, list[Any]]  # column → one value per optimizer step, in arrival order
    evals: list[dict[str, Any]]
    events: list[dict[str, Any]]
    spec_text: str

    def column(self, name: str) -> list[Any]:
        steps = len(self.history.get("step", []))
        return self.history.get(name) or ([1] * steps if name == "attempt" else [])

    def attempts(self) -> list[int]:
        return sorted(set(self.column("attempt")))

    def rows_of(self, attempt: int) -> list[int]:
        return [i for i, a in enumerate(self.column("attempt")) if a == attempt]

    def spec_hash(self) -> str | None:
        found = re.search(r"hash (\w+)", self.spec_text.partition("\n")[0])
        return self.summary.get("spec_hash") or (found.group(1) if found else None)


@dataclass(frozen=True)
class Marker:
    """A vertical line: where an attempt failed or where the next one resumed."""

    kind: str  # "failed" | "resumed"
    step: int
    t: float | None
    label: str


# ---------------------------------------------------------------- reading the run


def load_run(run_dir: Path) -> RunFiles:
    """Read a run directory; only summary.json is required (older runs lack events)."""
    if not run_dir.is_dir():
        raise DataError(
            f"{run_dir}: no such run directory; pass OUTPUT_DIR/NAME/RUN_ID, "
            "the folder that holds the run's summary.json"
        )
    summary_path = run_dir / "summary.json"
    if not summary_path.is_file():
        raise DataError(_missing_summary(run_dir))
    summary = _read_json(summary_path)
    if not isinstance(summary, dict):
        raise DataError(f"{summary_path}: expected a JSON object, found {type(summary).__name__}")
    spec_path = run_dir / "spec.yaml"
    return RunFiles(
        run_dir=run_dir,
        summary=summary,
        history=_read_history(run_dir / "history.parquet"),
        evals=_read_json(run_dir / "evals.json") if (run_dir / "evals.json").is_file() else [],
        events=_read_events(run_dir / "events.jsonl"),
        spec_text=spec_path.read_text() if spec_path.is_file() else "",
    )


def _missing_summary(run_dir: Path) -> str:
    runs = sorted(p.name for p in run_dir.iterdir() if (p / "summary.json").is_file())
    if runs:
        return f"{run_dir} is a job's folder, not a run: pick one of its runs, e.g. " + ", ".join(
            str(run_dir / r) for r in runs[-3:]
        )
    return (
        f"{run_dir}: summary.json is missing, so this is not a finished run directory "
        "(the run is still going, or was killed before it wrote its records)"
    )


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: cannot read it as JSON ({exc})") from None


def _read_history(path: Path) -> dict[str, list[Any]]:
    if not path.is_file():
        return {}
    try:
        return pq.read_table(path).to_pydict()
    except (OSError, pa.ArrowException) as exc:
        raise DataError(f"{path}: cannot read it as Parquet ({exc})") from None


def _read_events(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    events = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            events.append(json.loads(line))
        except ValueError:
            raise DataError(f"{path}:{number}: not a JSON line: {line[:80]!r}") from None
    return events


# ---------------------------------------------------------------- attempts and restarts


def redone_rows(run: RunFiles) -> list[int]:
    """Rows whose step an earlier attempt had already done (work lost to a restart)."""
    first_attempt: dict[int, int] = {}
    redone = []
    for i, (step, attempt) in enumerate(
        zip(run.column("step"), run.column("attempt"), strict=True)
    ):
        if first_attempt.setdefault(step, attempt) < attempt:
            redone.append(i)
    return redone


def restart_markers(run: RunFiles) -> list[Marker]:
    steps, times, attempts = run.column("step"), run.column("t"), run.attempts()
    markers = []
    for attempt in attempts:
        last = run.rows_of(attempt)[-1]
        ended = attempt != attempts[-1] or run.summary.get("status") not in ("succeeded", None)
        if ended:
            verb = "failed" if attempt != attempts[-1] else run.summary["status"]
            markers.append(Marker("failed", steps[last], times[last], f"attempt {attempt} {verb}"))
    resumed = {e.get("attempt"): e for e in run.events if e.get("type") == "resumed"}
    for recovery in run.summary.get("recoveries") or []:
        attempt = recovery["attempt"]
        event = resumed.get(attempt, {})
        step = event.get("step", recovery.get("resumed_step", 0))
        t = event.get("t") or next((times[i] for i in run.rows_of(attempt)), None)
        markers.append(Marker("resumed", step, t, f"attempt {attempt} resumed at step {step}"))
    return markers


def _run_start(run: RunFiles) -> float:
    """Unix time the command started: first step minus the time to first step."""
    times = run.column("t")
    to_first = run.summary.get("time_to_first_step_s")
    if times and to_first is not None:
        return float(times[0] - to_first)
    event_times = [e["t"] for e in run.events if "t" in e]
    return float(min(event_times + times, default=0.0))


# ---------------------------------------------------------------- figures
# Figures are plain Plotly JSON (data + layout), built here without plotly's validation
# (which costs seconds a report); the unit tests validate them against plotly's schema.

Figure = dict[str, Any]  # {"data": [Trace, ...], "layout": {...}}
Trace = dict[str, Any]
AXIS = {"gridcolor": "#eee", "zeroline": False, "automargin": True}


def _figure(title: str, x: str, y: str, height: int = 380) -> Figure:
    layout = {
        "title": {"text": title},
        "height": height,
        "margin": {"l": 60, "r": 30, "t": 60, "b": 50},
        "plot_bgcolor": "white",
        "legend": {"orientation": "h", "y": -0.25},
        "xaxis": {"title": {"text": x}, **AXIS},
        "yaxis": {"title": {"text": y}, **AXIS},
        "shapes": [],
        "annotations": [],
    }
    return {"data": [], "layout": layout}


def _shape(fig: Figure, **props: Any) -> None:
    fig["layout"]["shapes"].append({"yref": "paper", "y0": 0, "y1": 1, **props})


def _note(fig: Figure, text: str, **props: Any) -> None:
    fig["layout"]["annotations"].append({"text": text, "showarrow": False, **props})


def _vline(
    fig: Figure, x: float, text: str, color: str, left: bool = False, xref: str = "x"
) -> None:
    """A dashed vertical line with its label written along it."""
    _shape(fig, type="line", xref=xref, x0=x, x1=x, line={"color": color, "dash": "dash"})
    side = {"xanchor": "right" if left else "left", "yanchor": "top", "textangle": -90}
    side["bgcolor"] = "rgba(255,255,255,0.7)"
    _note(fig, text, x=x, xref=xref, y=1, yref="paper", font={"color": color}, **side)


def _shade(fig: Figure, x0: float, x1: float, xref: str = "x", text: str = "") -> None:
    red = {"fillcolor": FAILED_COLOR, "opacity": 0.08, "line": {"width": 0}, "layer": "below"}
    _shape(fig, type="rect", xref=xref, x0=x0, x1=x1, **red)
    if text:
        where = {"x": (x0 + x1) / 2, "xref": xref, "y": 0, "yref": "paper", "yanchor": "bottom"}
        _note(fig, text, font={"color": FAILED_COLOR}, **where)


def _draw_markers(
    fig: Figure, markers: list[Marker], since: float | None = None, xref: str = "x"
) -> None:
    """Restart markers at their step, or at their seconds `since` a start time."""
    for m in markers:
        if since is None or m.t is not None:
            x = m.step if since is None else round(float(m.t or 0.0) - since, 3)
            color = FAILED_COLOR if m.kind == "failed" else RESUMED_COLOR
            _vline(fig, x, m.label, color, left=m.kind == "failed", xref=xref)


def _trace(kind: str, name: str, x: list[Any], y: list[Any], **props: Any) -> Trace:
    return {"type": kind, "name": name, "x": x, "y": y, **props}


def _per_attempt(run: RunFiles, x: list[Any], y: list[Any], axes: str = "") -> list[Trace]:
    """One line per attempt, coloured by attempt in every figure (`axes`: "2" → x2/y2)."""
    palette = ("#1f77b4", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf")
    traces = []
    for n, attempt in enumerate(run.attempts()):
        rows = run.rows_of(attempt)
        style = {"line": {"color": palette[n % len(palette)]}, "mode": "lines"}
        where = {"xaxis": "x" + axes, "yaxis": "y" + axes, "showlegend": not axes}
        xs, ys = [x[i] for i in rows], [y[i] for i in rows]
        traces.append(_trace("scatter", f"attempt {attempt}", xs, ys, **style, **where))
        traces[-1]["legendgroup"] = str(attempt)
    return traces


def loss_figure(run: RunFiles) -> Figure | None:
    steps, loss = run.column("step"), run.column("loss")
    if not steps:
        return None
    fig = _figure("Training loss by step", "step", "loss")
    fig["data"] = _per_attempt(run, steps, loss)
    redone = redone_rows(run)
    if redone:
        xs, ys = [steps[i] for i in redone], [loss[i] for i in redone]
        marker = {"symbol": "x", "size": 7, "color": FAILED_COLOR}
        name = f"redone steps ({len(redone)})"
        fig["data"].append(_trace("scatter", name, xs, ys, mode="markers", marker=marker))
        _shade(fig, min(steps[i] for i in redone), max(steps[i] for i in redone))
    _draw_markers(fig, restart_markers(run))
    return fig


def throughput_figure(run: RunFiles) -> Figure | None:
    steps, rate = run.column("step"), run.column("samples_per_s")
    if not steps:
        return None
    start = _run_start(run)
    fig = _figure("Throughput (samples/s): by step, and over time", "step", "samples/s")
    elapsed = [round(t - start, 3) for t in run.column("t")]
    fig["data"] = _per_attempt(run, steps, rate) + _per_attempt(run, elapsed, rate, axes="2")
    layout = fig["layout"]
    layout["xaxis"]["domain"] = [0, 0.47]
    layout["xaxis2"] = {"domain": [0.53, 1], "anchor": "y2", **AXIS}
    layout["xaxis2"]["title"] = {"text": "seconds since the command started"}
    layout["yaxis2"] = {"anchor": "x2", **AXIS}
    mean = run.summary.get("samples_per_s")
    if mean:
        where = {"xref": "x domain", "yref": "y"}
        _shape(fig, type="line", x0=0, x1=1, y0=mean, y1=mean, line={"dash": "dot"}, **where)
        text = f"summary: {mean:,.0f} samples/s"
        _note(fig, text, x=0, y=mean, xanchor="left", yanchor="bottom", **where)
    markers = restart_markers(run)
    _draw_markers(fig, markers)
    _draw_markers(fig, markers, since=start, xref="x2")
    _shade_restarts(fig, run, start)
    return fig


def _shade_restarts(fig: Figure, run: RunFiles, since: float) -> None:
    """Shade the time from an attempt's last step to the next attempt's first step."""
    times = run.column("t")
    for before, after in itertools.pairwise(run.attempts()):
        x0 = round(times[run.rows_of(before)[-1]] - since, 3)
        x1 = round(times[run.rows_of(after)[0]] - since, 3)
        _shade(fig, x0, x1, xref="x2", text=f"no training for {x1 - x0:.1f} s")


def step_time_figure(run: RunFiles) -> Figure | None:
    step_times = run.column("step_time_s")
    if not step_times:
        return None
    title = f"Step time, {len(step_times)} steps of all attempts"
    fig = _figure(title, "step time (s)", "steps")
    fig["data"] = [{"type": "histogram", "name": "steps", "x": step_times, "nbinsx": 60}]
    for p, value in zip(PERCENTILES, np.percentile(step_times, PERCENTILES), strict=True):
        _vline(fig, float(value), f"p{p} {value * 1000:.1f} ms", "#444")
    return fig


def data_wait_figure(run: RunFiles) -> Figure | None:
    fraction, train_s = run.summary.get("data_wait_fraction"), run.summary.get("train_time_s")
    if fraction is None or not train_s:
        return None
    title = f"Data wait: {fraction:.2%} of {train_s:g} s training (summary.data_wait_fraction)"
    fig = _figure(title, "seconds", "", height=220)
    fig["layout"]["barmode"] = "stack"
    fig["data"] = [
        _trace(
            "bar", name, [round(s, 4)], ["training time"], orientation="h", marker={"color": color}
        )
        for name, s, color in (
            ("waiting for data", fraction * train_s, FAILED_COLOR),
            ("computing", (1 - fraction) * train_s, "#1f77b4"),
        )
    ]
    return fig


def eval_figure(run: RunFiles) -> Figure | None:
    if not run.evals:
        return None
    fig = _figure("Evaluation metrics by step", "step", "metric")
    fig["layout"]["yaxis2"] = {"title": {"text": "eval loss"}, "overlaying": "y", "side": "right"}
    fig["layout"]["margin"]["r"] = 70
    steps = [e["step"] for e in run.evals]
    for name in (k for k in run.evals[0] if k not in ("step", "num_samples")):
        y, right = [e.get(name) for e in run.evals], name == "loss"
        label = name + (" (right axis)" if right else "")
        axis = "y2" if right else "y"
        fig["data"].append(_trace("scatter", label, steps, y, mode="lines+markers", yaxis=axis))
    return fig


def checkpoint_figure(run: RunFiles) -> Figure | None:
    blocked = [e for e in run.events if e.get("type") == "checkpoint"]
    saved = [e for e in run.events if e.get("type") == "checkpoint_saved"]
    if not blocked and not saved:
        return None
    total = sum(e["blocked_s"] for e in blocked)
    title = f"Checkpoints: {len(saved)} written, training blocked {total:.3g} s in all"
    fig = _figure(title, "step", "seconds")
    fig["layout"]["barmode"] = "group"
    for name, events, key in (
        ("training blocked (s)", blocked, "blocked_s"),
        ("write (s)", saved, "write_s"),
    ):
        hover = "step %{x}: %{y:.4f} s<br>attempt %{customdata[0]}"
        hover += "<br>%{customdata[1]:.2f} MiB" if key == "write_s" else ""
        extra = [[e.get("attempt", 1), e.get("size_bytes", 0) / 2**20] for e in events]
        xs, ys = [e["step"] for e in events], [e[key] for e in events]
        fig["data"].append(_trace("bar", name, xs, ys, customdata=extra, hovertemplate=hover))
    return fig


FIGURES = (
    ("loss", "Loss", loss_figure, "No steps recorded: history.parquet is empty or missing."),
    ("throughput", "Throughput", throughput_figure, "No steps recorded."),
    ("step-time", "Step time", step_time_figure, "No steps recorded."),
    ("data-wait", "Data wait", data_wait_figure, "The summary has no data_wait_fraction."),
    ("evals", "Evaluation", eval_figure, "No evaluations: evals.json is absent."),
    ("checkpoints", "Checkpoints", checkpoint_figure, "No checkpoint events in events.jsonl."),
)


# ---------------------------------------------------------------- tables and page


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


def _figure_section(key: str, title: str, fig: Figure | None, empty: str) -> str:
    if fig is None:
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
