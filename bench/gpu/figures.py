"""Figures of the GPU check from its legs' results: steady-state rates, MFU, ratios, table.

Pure functions over the legs' JSON (gpt2_check.py runs the legs). See gpt2_check.py's
docstring for how each leg is measured.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

GOAL = 0.97  # deepyard tokens/s over bare DeepSpeed's, same ZeRO stage
Result = dict[str, Any]


def deepyard_figures(summary: Result, expected_steps: int, warmup: int) -> Result:
    """Steady-state figures of a deepyard leg from its run record, measured as the bare
    loops are: the steps after the warm-up, by the step events' clock."""
    history = pq.read_table(Path(summary["run_dir"]) / "history.parquet").to_pydict()
    times, stamps = history["step_time_s"], history["t"]
    steps = len(times)
    if steps != expected_steps or not summary.get("tokens_per_s"):
        raise ValueError(
            f"the run recorded {steps} steps and tokens_per_s "
            f"{summary.get('tokens_per_s')}; expected {expected_steps} steps"
        )
    # deepyard's own count of tokens per step, from its summary (steps 2..N, per-step timer)
    tokens_per_step = round(summary["tokens_per_s"] * sum(times[1:]) / (steps - 1))
    window_s = stamps[-1] - stamps[warmup - 1]  # steps warmup+1 .. N, end to end
    timed = steps - warmup
    step_timer_s = sum(times[warmup:])
    return {
        "timed_steps": timed,
        "timed_s": round(window_s, 4),
        "ms_per_step": round(1000 * window_s / timed, 3),
        "tokens_per_step": tokens_per_step,
        "tokens_per_s": round(tokens_per_step * timed / window_s, 2),
        "tokens_per_s_step_timer": round(tokens_per_step * timed / step_timer_s, 2),
        "between_steps_ms": round(1000 * (window_s - step_timer_s) / timed, 3),
        "own_tokens_per_s": summary["tokens_per_s"],
        "own_mfu": summary.get("mfu"),
    }


def add_ratios(legs: dict[str, Result], peak_flops: float | None, flops: float) -> Result:
    """MFU of every leg that ran; deepyard over bare DeepSpeed (and bare torch) per stage."""
    for leg in legs.values():
        if leg.get("status") == "ok":
            leg["flops_per_token"] = flops
            leg["mfu"] = (
                round(3 * flops * leg["tokens_per_s"] / peak_flops, 5) if peak_flops else None
            )
    ratios: Result = {}
    for stage in (1, 2):
        mine, bare_ds = legs.get(f"deepyard-zero{stage}"), legs.get(f"bare-ds-zero{stage}")
        ok = mine and bare_ds and mine["status"] == bare_ds["status"] == "ok"
        ratios[f"zero{stage}"] = (
            {
                "deepyard_over_bare_ds": round(mine["tokens_per_s"] / bare_ds["tokens_per_s"], 4),
                "deepyard_own_figure_over_bare_ds": round(
                    mine["own_tokens_per_s"] / bare_ds["tokens_per_s"], 4
                ),
                "goal": GOAL,
                "met": mine["tokens_per_s"] / bare_ds["tokens_per_s"] >= GOAL,
            }
            if ok and mine is not None and bare_ds is not None
            else None
        )
    torch_leg = legs.get("bare-torch")
    for stage in (1, 2):
        bare_ds = legs.get(f"bare-ds-zero{stage}")
        if torch_leg and bare_ds and torch_leg["status"] == bare_ds["status"] == "ok":
            ratios[f"bare_ds_zero{stage}_over_bare_torch"] = round(
                bare_ds["tokens_per_s"] / torch_leg["tokens_per_s"], 4
            )
    return ratios


def table(result: Result) -> str:
    """The table a user reads last: one row a leg."""
    s = result["settings"]
    lines = [
        f"GPT {s['size']} check · {result['environment']['device_name']} · {s['precision']} · "
        f"seq {s['seq']} · micro-batch {s['micro_batch']} · {s['steps']} steps, "
        f"first {s['warmup']} left out",
        f"{'loop':<16} {'ms/step':>9} {'tokens/s':>11} {'MFU':>7} {'vs bare DS':>11}  goal",
    ]
    for name, leg in result["legs"].items():
        if leg.get("status") != "ok":
            lines.append(f"{name:<16} FAILED: {leg.get('error', '')[:200]}")
            continue
        ratio = result["ratios"].get(f"zero{name[-1]}") if name.startswith("deepyard") else None
        vs = f"{ratio['deepyard_over_bare_ds']:.3f}" if ratio else "-"
        goal = ("ok" if ratio["met"] else "MISSED") + f" (>= {GOAL})" if ratio else ""
        mfu = f"{100 * leg['mfu']:.1f}%" if leg.get("mfu") is not None else "-"
        lines.append(
            f"{name:<16} {leg['ms_per_step']:>9.1f} {leg['tokens_per_s']:>11,.0f} {mfu:>7} "
            f"{vs:>11}  {goal}"
        )
    for name, leg in result["legs"].items():
        if name.startswith("deepyard") and leg.get("status") == "ok":
            lines.append(
                f"{name}: its own summary says {leg['own_tokens_per_s']:,.0f} tokens/s "
                f"(steps 2..N, per-step timer); {leg['between_steps_ms']:.2f} ms/step "
                f"between steps; first step {leg['summary']['time_to_first_step_s']} s "
                f"after the command"
            )
    peak = s["peak_flops"]
    lines.append(
        f"MFU = 3 x {result['flops_per_token']:,.0f} FLOPs/token x tokens/s / "
        + (f"{peak / 1e12:g} TFLOP/s" if peak else "no peak known (pass --peak-flops)")
    )
    if s["device"] == "cpu":
        lines.append("smoke run on CPU: proves every leg runs; its figures are no benchmark")
    return "\n".join(lines)
