"""Sweeps: a SweepSpec becomes a Ray Tune search; every trial is a normal deepyard job.

Data flow: sweep.yaml → spec.sweep_load.load_sweep → SweepSpec → `to_tune` (param space),
`search_alg`, `trial_scheduler` → Ray Tune → each trial's config → `trial_spec` → JobSpec
→ the ordinary job path (launch → train). Nothing here imports Ray until it is called.
"""

from __future__ import annotations

from deepyard.sweep.space import search_alg, to_tune, trial_scheduler, trial_spec

__all__ = ["search_alg", "to_tune", "trial_scheduler", "trial_spec"]
