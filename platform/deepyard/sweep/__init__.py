"""Sweeps: a SweepSpec becomes a Ray Tune search; every trial is a normal deepyard job.

Data flow: sweep.yaml → spec.sweep_load.load_sweep → SweepSpec → `to_tune` (param space),
`build_searcher` (journaled), `trial_scheduler` → Ray Tune (runner.py) → each trial's config
→ `trial_spec` → JobSpec → the ordinary job path (trial.py → launch → train).
"""

from __future__ import annotations

from deepyard.sweep.search import build_searcher
from deepyard.sweep.space import to_tune, trial_scheduler, trial_spec

__all__ = ["build_searcher", "to_tune", "trial_scheduler", "trial_spec"]
