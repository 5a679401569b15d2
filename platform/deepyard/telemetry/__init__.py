"""Telemetry: events from rank 0 → run records (JSON, Parquet) and the live display.

Data flow: train.loop emits events → `RunRecorder` (summary.json, history.parquet)
and `ProgressDisplay` (rich on a terminal, log lines otherwise).
"""

from deepyard.telemetry.progress import ProgressDisplay, result_line, summary_table
from deepyard.telemetry.record import RunRecorder, new_run_id

__all__ = ["ProgressDisplay", "RunRecorder", "new_run_id", "result_line", "summary_table"]
