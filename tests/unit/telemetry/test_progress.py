"""What a person reads while a run goes: log lines off a terminal, a summary table at the end."""

from __future__ import annotations

import io

from rich.console import Console

from deepyard.telemetry import ProgressDisplay, summary_table


def step(n: int) -> dict:
    return {
        "type": "step",
        "step": n,
        "epoch": 0,
        "loss": 1.0 / n,
        "lr": 1e-3,
        "samples_per_s": 50.0,
    }


def test_log_lines_on_first_every_nth_and_last_step() -> None:
    out = io.StringIO()  # not a terminal: one log line per note (a sweep trial's trial.log)
    display = ProgressDisplay("tiny", log_every=4, console=Console(file=out, width=200))
    assert not display.live
    display.add({"type": "start", "total_steps": 10})
    for n in range(1, 11):
        display.add(step(n))
    display.add({"type": "eval", "step": 10, "metrics": {"accuracy": 0.5, "num_samples": 8.0}})
    display.close()
    lines = out.getvalue().splitlines()
    assert lines[0] == "[tiny] training 10 steps"
    logged = [line.split()[2] for line in lines if line.startswith("[tiny] step ")]
    assert logged == ["1/10", "4/10", "8/10", "10/10"]
    assert "loss 0.2500" in lines[2]
    assert lines[-1] == "[tiny] eval at step 10: accuracy 0.5000"


def test_summary_table_shows_metrics_and_skips_unknowns() -> None:
    table = summary_table(
        {
            "job": "tiny",
            "run_id": "r1",
            "status": "succeeded",
            "steps": 30,
            "samples_per_s": 1234.5,
            "final_loss": 0.123456,
            "time_to_first_step_s": None,
            "eval": {"accuracy": 0.9},
        }
    )
    out = io.StringIO()
    Console(file=out, width=100).print(table)
    text = out.getvalue()
    assert "tiny · run r1 · succeeded" in text
    assert "0.1235" in text and "1,234" in text and "test accuracy" in text
    assert "time to first step" not in text
