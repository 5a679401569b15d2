"""One trial: the base job with the trial's values, run as an ordinary deepyard job.

The trial runs inside Ray Tune's trainable actor, which holds the trial's placement group
(one bundle per rank, no bundle for itself); the job's worker gang starts in it. Each
evaluation is reported to Tune with `step` (the schedulers' clock) and the trial's
worker-hours. A trial's job lives in `<sweep>/trials/<trial id>/`, so a trial Tune starts
again (driver restored, trial paused and resumed) resumes from its own newest checkpoint.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from deepyard.spec.job import JobSpec
from deepyard.spec.sweep import PbtScheduler, SweepSpec
from deepyard.sweep import metrics
from deepyard.sweep.exploit import adopt, donor_pointer, pointer, report_with_pointer
from deepyard.sweep.pbt import STEPS_LEFT
from deepyard.sweep.space import trial_spec

USAGE_FILE = "usage.json"
EXHAUSTED_FILE = "exhausted.json"  # in the sweep dir while the budget allows no new trial


@dataclass(frozen=True)
class TrialSetup:
    """What every trial needs from the driver (pickled to the trial's actor)."""

    sweep: SweepSpec
    sweep_dir: Path

    def trial_dir(self, trial_id: str) -> Path:
        return self.sweep_dir / "trials" / trial_id

    def job(self, trial_id: str, config: dict[str, Any]) -> JobSpec:
        """The trial's job: the base job with the trial's values, writing under its dir."""
        spec = trial_spec(self.sweep.job, config)
        return spec.model_copy(update={"output_dir": str(self.trial_dir(trial_id))})


def trial_resources(setup: TrialSetup) -> Any:
    """Tune's resource request per trial: the job's worker bundles (they may depend on the
    trial's values, e.g. resources.num_workers), none for the trainable itself."""
    from ray.tune import PlacementGroupFactory

    from deepyard.launch.placement import bundles

    def per_trial(config: dict[str, Any]) -> PlacementGroupFactory:
        spec = trial_spec(setup.sweep.job, config)
        return PlacementGroupFactory(
            [{}, *bundles(spec.resources)], strategy=spec.resources.placement
        )

    return per_trial


def run_trial(config: dict[str, Any], setup: TrialSetup) -> None:
    """Tune's function trainable: run the trial's job, reporting each evaluation."""
    from ray import tune

    trial_id = tune.get_context().get_trial_id()
    if (setup.sweep_dir / EXHAUSTED_FILE).exists():
        return  # queued before the budget ran out: it never starts (status: not run)
    spec = setup.job(trial_id, config)
    setup.trial_dir(trial_id).mkdir(parents=True, exist_ok=True)
    usage = Usage(setup.trial_dir(trial_id), spec.resources.num_workers)
    with (setup.trial_dir(trial_id) / "trial.log").open("a") as log:
        _run_job(setup, trial_id, spec, usage, Console(file=log, width=120))


def _run_job(
    setup: TrialSetup, trial_id: str, spec: JobSpec, usage: Usage, console: Console
) -> None:
    import ray

    from deepyard.data import resolve_sources
    from deepyard.launch.local import JobRunner
    from deepyard.telemetry.session import open_run
    from deepyard.train.loop import Sources

    session = open_run(spec, time.time(), console)
    pbt = isinstance(setup.sweep.scheduler, PbtScheduler)
    if pbt:
        donor = donor_pointer(trial_id)
        if donor is not None:  # PBT exploit: continue from the better trial's weights
            adopt(donor, spec, setup.trial_dir(trial_id), session.display.note)
    reporter = _Reporter(usage, pbt_ref=(trial_id, spec) if pbt else None)

    def on_event(event: dict[str, Any]) -> None:
        session.emit(event)
        reporter.observe(event)

    runner = JobRunner(
        spec,
        Sources(*resolve_sources(spec.data)),
        on_event,
        session.display.note,
        session.recorder.run_id,
        log_dir=session.recorder.run_dir,
        placement=ray.util.get_current_placement_group(),
        hold_after_eval=pbt,  # judged, paused and copied at the step it reported
    )
    if session.exporter is not None:  # the sweep driver's /metrics carries ours too
        metrics.announce(setup.sweep.name, trial_id, session.exporter.address)
    try:
        summary = runner.run()
    except Exception as exc:
        session.finish(runner.attempts.summary(), "failed", str(exc))
        raise
    finally:
        usage.save()
        metrics.retire(setup.sweep.name, trial_id)
    session.finish(summary, "succeeded")


class Usage:
    """The trial's worker-hours, kept in its dir across resumes."""

    def __init__(self, trial_dir: Path, num_workers: int) -> None:
        self.path = trial_dir / USAGE_FILE
        self.num_workers = num_workers
        self.started = time.monotonic()
        self.before = (
            json.loads(self.path.read_text())["worker_hours"] if self.path.exists() else 0.0
        )

    def worker_hours(self) -> float:
        return self.before + self.num_workers * (time.monotonic() - self.started) / 3600

    def save(self) -> float:
        """Record the worker-hours so far; returns them."""
        hours = self.worker_hours()
        self.path.write_text(json.dumps({"worker_hours": hours}))
        return hours


class _Reporter:
    """Each evaluation → one Tune result: the eval metrics, `step` and worker-hours."""

    def __init__(self, usage: Usage, pbt_ref: tuple[str, JobSpec] | None = None) -> None:
        self.usage = usage
        self.pbt_ref = pbt_ref  # PBT: each result carries a pointer to our checkpoints
        self.total_steps = 0  # from the run's start event

    def observe(self, event: dict[str, Any]) -> None:
        if event.get("type") == "start":
            self.total_steps = event["total_steps"]
        if event.get("type") != "eval":
            return
        from ray import tune

        metrics = {k: v for k, v in event["metrics"].items() if k != "num_samples"}
        result = {
            **metrics,
            "step": event["step"],
            STEPS_LEFT: self.total_steps - event["step"],
            "worker_hours": self.usage.save(),
        }
        if self.pbt_ref is None:
            tune.report(result)
        else:
            report_with_pointer(result, pointer(*self.pbt_ref, event["step"]))
