"""SweepSpec → Ray Tune objects, and one trial's config → its JobSpec.

Tune's config is flat: its keys are the space's dotted job paths (`optimizer.lr`), its
values one point of the space. Metric and mode go to `tune.TuneConfig`, never into the
searcher or scheduler built here (Tune refuses them twice). Schedulers count time in job
steps: a trial reports `step` (TIME_ATTR) with the metric at each evaluation.

ray.tune is imported inside each function: importing it costs seconds.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from deepyard.errors import SpecError
from deepyard.spec.job import JobSpec
from deepyard.spec.sweep import (
    AshaScheduler,
    HyperbandScheduler,
    ParamSpec,
    PbtScheduler,
    SweepSpec,
    job_with,
    param_problem,
)

if TYPE_CHECKING:
    from ray.tune.schedulers import TrialScheduler

TIME_ATTR = "step"

_DOMAINS: dict[str, Callable[[Any, Any], Any]] = {
    "uniform": lambda tune, p: tune.uniform(p.low, p.high),
    "loguniform": lambda tune, p: tune.loguniform(p.low, p.high),
    "randint": lambda tune, p: tune.randint(p.low, p.high),  # high exclusive in both
    "choice": lambda tune, p: tune.choice(list(p.values)),
    "grid": lambda tune, p: tune.grid_search(list(p.values)),
}


def to_tune(space: Mapping[str, ParamSpec]) -> dict[str, Any]:
    """The space as Tune's param_space: dotted path → Tune domain (or grid_search dict)."""
    from ray import tune

    return {path: _DOMAINS[param.type](tune, param) for path, param in space.items()}


def trial_spec(base_job: JobSpec, config: Mapping[str, Any]) -> JobSpec:
    """The base job with one trial's values at their dotted paths, validated; a value that
    breaks the job is a SpecError naming the parameter."""
    try:
        return job_with(base_job, config)
    except ValueError as exc:  # pydantic's ValidationError is a ValueError
        failure = exc
    for path, value in config.items():
        alone = _failure(base_job, {path: value})
        if alone is not None:
            text, _ = param_problem(alone, path)
            raise SpecError(f"space.{path} = {value!r}: {text}", "trial config")
    shown = ", ".join(f"{path}={value!r}" for path, value in config.items())
    text, _ = param_problem(failure, "")
    raise SpecError(f"space values {shown} together: {text}", "trial config")


def trial_scheduler(spec: SweepSpec) -> TrialScheduler:
    """fifo, asha, hyperband or pbt, counting time in steps (TIME_ATTR)."""
    from ray.tune import schedulers

    chosen, max_steps = spec.scheduler, spec.max_steps or 0  # validated: set for asha/hyperband
    if isinstance(chosen, AshaScheduler):
        return schedulers.ASHAScheduler(
            time_attr=TIME_ATTR,
            max_t=max_steps,
            grace_period=chosen.grace_period_steps,
            reduction_factor=chosen.reduction_factor,
        )
    if isinstance(chosen, HyperbandScheduler):
        return schedulers.HyperBandScheduler(
            time_attr=TIME_ATTR, max_t=max_steps, reduction_factor=chosen.reduction_factor
        )
    if isinstance(chosen, PbtScheduler):
        from deepyard.sweep import pbt

        mutations = to_tune({path: spec.space[path] for path in spec.mutated})
        return pbt.scheduler(  # type: ignore[no-any-return]
            time_attr=TIME_ATTR,
            perturbation_interval=chosen.perturbation_interval_steps,
            hyperparam_mutations=mutations,
            quantile_fraction=chosen.quantile_fraction,
            synch=chosen.synch,
        )
    return schedulers.FIFOScheduler()


def _failure(job: JobSpec, values: Mapping[str, Any]) -> ValueError | None:
    try:
        job_with(job, values)
    except ValueError as exc:
        return exc
    return None
