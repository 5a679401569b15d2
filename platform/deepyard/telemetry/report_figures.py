"""One Plotly figure per question a person asks of a run (loss, the task's own per-step
figures, throughput, step time, data wait, evaluations, checkpoints), as plain JSON dicts
with the run's own values."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np

from deepyard.telemetry.record import HISTORY_COLUMNS
from deepyard.telemetry.report_run import (
    Marker,
    RunFiles,
    redone_rows,
    restart_markers,
    run_start,
)

FAILED_COLOR = "#d62728"
RESUMED_COLOR = "#2ca02c"
PERCENTILES = (50, 95, 99)

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


def step_metrics_figure(run: RunFiles) -> Figure | None:
    """The task's own per-step figures (history.parquet's columns beyond the recorder's
    own: a GAN's loss_d, loss_g, d_real, d_fake), one line each, broken between attempts;
    None for a task without any (the section is left out)."""
    steps = run.column("step")
    names = [n for n in run.history if n not in HISTORY_COLUMNS and _reported(run.column(n))]
    if not steps or not names:
        return None
    fig = _figure("Task metrics by step: " + ", ".join(names), "step", "value")
    for name in names:
        xs, ys = _by_attempt(run, steps), _by_attempt(run, run.column(name))
        fig["data"].append(_trace("scatter", name, xs, ys, mode="lines", connectgaps=False))
    _draw_markers(fig, restart_markers(run))
    return fig


def _reported(values: list[Any]) -> bool:
    return any(v is not None for v in values)


def _by_attempt(run: RunFiles, values: list[Any]) -> list[Any]:
    """`values` in attempt order with a gap (None) between attempts: a resumed attempt
    starts back at its checkpoint's step, and a line drawn on would run backwards."""
    out: list[Any] = []
    for attempt in run.attempts():
        out += ([None] if out else []) + [values[i] for i in run.rows_of(attempt)]
    return out


def throughput_figure(run: RunFiles) -> Figure | None:
    steps, rate = run.column("step"), run.column("samples_per_s")
    if not steps:
        return None
    start = run_start(run)
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
    ("task-metrics", "Task metrics", step_metrics_figure, None),  # None: only where present
    ("throughput", "Throughput", throughput_figure, "No steps recorded."),
    ("step-time", "Step time", step_time_figure, "No steps recorded."),
    ("data-wait", "Data wait", data_wait_figure, "The summary has no data_wait_fraction."),
    ("evals", "Evaluation", eval_figure, "No evaluations: evals.json is absent."),
    ("checkpoints", "Checkpoints", checkpoint_figure, "No checkpoint events in events.jsonl."),
)


# ---------------------------------------------------------------- tables and page
