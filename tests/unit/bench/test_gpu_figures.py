"""The GPU check's figures (bench/gpu/figures.py) from made-up legs: deepyard's rate counts
the time between its steps, ratios and MFU follow the measured figures, failures show."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

FIGURES = Path(__file__).resolve().parents[3] / "bench" / "gpu" / "figures.py"


def _figures() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gpu_figures", FIGURES)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


figures = _figures()


def _run(tmp_path: Path, step_times: list[float], gap_s: float) -> dict[str, Any]:
    """A deepyard summary and run record: steps of `step_times`, `gap_s` between them,
    1,000 tokens a step (its summary's figure leaves out step 1, as deepyard's does)."""
    stamps, now = [], 100.0
    for took in step_times:
        now += took
        stamps.append(now)
        now += gap_s
    n = len(step_times)
    history = {"step": list(range(1, n + 1)), "step_time_s": step_times, "t": stamps}
    pq.write_table(pa.table(history), tmp_path / "history.parquet")
    own = 1000 * (n - 1) / sum(step_times[1:])
    return {"run_dir": str(tmp_path), "tokens_per_s": own, "mfu": None}


def test_deepyard_rate_is_end_to_end_over_the_steps_after_warmup(tmp_path: Path) -> None:
    summary = _run(tmp_path, [5.0, 0.3, 0.1, 0.1, 0.1, 0.1], gap_s=0.01)
    found = figures.deepyard_figures(summary, expected_steps=6, warmup=2)
    assert found["tokens_per_step"] == 1000  # deepyard's own count, recovered
    assert found["timed_steps"] == 4
    assert found["timed_s"] == pytest.approx(4 * 0.11)  # steps 3..6 and the gaps before them
    assert found["tokens_per_s"] == pytest.approx(4000 / 0.44, rel=1e-4)
    assert found["tokens_per_s_step_timer"] == pytest.approx(4000 / 0.4, rel=1e-4)
    assert found["between_steps_ms"] == pytest.approx(10.0, rel=1e-3)
    # deepyard's own figure keeps step 2 (0.3 s) in: the check reports it, not as the ratio
    assert found["own_tokens_per_s"] == pytest.approx(5000 / 0.7)


def test_a_run_of_other_length_is_refused(tmp_path: Path) -> None:
    summary = _run(tmp_path, [1.0, 0.1, 0.1], gap_s=0.0)
    with pytest.raises(ValueError, match="expected 6 steps"):
        figures.deepyard_figures(summary, expected_steps=6, warmup=2)


def _leg(tokens_per_s: float, **extra: Any) -> dict[str, Any]:
    return {
        "status": "ok",
        "tokens_per_s": tokens_per_s,
        "ms_per_step": 1e3 / tokens_per_s,
        **extra,
    }


def test_ratios_mfu_and_table() -> None:
    legs = {
        "bare-torch": _leg(200.0),
        "bare-ds-zero1": _leg(100.0),
        "deepyard-zero1": _leg(
            98.0,
            own_tokens_per_s=99.0,
            between_steps_ms=0.5,
            summary={"time_to_first_step_s": 20.0},
        ),
        "bare-ds-zero2": _leg(100.0),
        "deepyard-zero2": {"status": "failed", "error": "exit code 1; CUDA out of memory"},
    }
    ratios = figures.add_ratios(legs, peak_flops=1e6, flops=1000.0)
    assert ratios["zero1"] == {
        "deepyard_over_bare_ds": 0.98,
        "deepyard_own_figure_over_bare_ds": 0.99,
        "goal": 0.97,
        "met": True,
    }
    assert ratios["zero2"] is None  # no ratio from a failed leg
    assert ratios["bare_ds_zero1_over_bare_torch"] == 0.5
    assert legs["bare-ds-zero1"]["mfu"] == pytest.approx(3 * 1000 * 100 / 1e6)
    settings = {
        "size": "small",
        "precision": "bf16",
        "seq": 1024,
        "micro_batch": 16,
        "steps": 100,
        "warmup": 10,
        "peak_flops": 1e6,
        "device": "cuda",
    }
    result = {
        "settings": settings,
        "environment": {"device_name": "NVIDIA H100"},
        "legs": legs,
        "ratios": ratios,
        "flops_per_token": 1000.0,
    }
    text = figures.table(result)
    rows = {line.split()[0]: line for line in text.splitlines() if line.split()}
    assert "0.980" in rows["deepyard-zero1"] and "ok (>= 0.97)" in rows["deepyard-zero1"]
    assert "FAILED: exit code 1; CUDA out of memory" in rows["deepyard-zero2"]
    assert "30.0%" in rows["bare-ds-zero1"]  # MFU
    assert "smoke" not in text
