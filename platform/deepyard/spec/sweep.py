"""The sweep spec: a base job, a search space over its fields, and how to search it.

Data flow: sweep.yaml → `sweep_load.load_sweep()` → SweepSpec → deepyard.sweep (Ray Tune)
→ N trials, each a JobSpec made by `job_with(spec.job, trial_config)`.

Space keys are dotted job field paths (`optimizer.lr`, `model.args.width`). Each is
checked here, once, by applying sample values of it (bounds, a fractional midpoint, every
listed value) to the base job: a path that is not a job field, or a range that leaves the
field's own limits, is one problem naming the parameter. Problems found together are
raised together as `Problems`, each located at its own field so the loader can point at
its YAML line.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    Field,
    PositiveFloat,
    PositiveInt,
    ValidationInfo,
    field_validator,
    model_validator,
)

from deepyard.spec.job import JobSpec
from deepyard.spec.recovery import EVAL_METRICS
from deepyard.spec.sweep_space import (  # noqa: F401  (re-exported)
    _NO_VALUE,
    PARAM_TYPES,
    ChoiceParam,
    GridParam,
    Loc,
    LogUniformParam,
    ParamSpec,
    Problem,
    Problems,
    RandIntParam,
    UniformParam,
    _Range,
    _short,
    _Spec,
    _Values,
    dotted,
    job_with,
    param_problem,
    set_path,
)
from deepyard.tasks.catalog import lower_is_better

__all__ = [
    "PARAM_TYPES",
    "SCHEDULERS",
    "AshaScheduler",
    "BudgetSpec",
    "ChoiceParam",
    "FifoScheduler",
    "GridParam",
    "HyperbandScheduler",
    "LogUniformParam",
    "ParamSpec",
    "PbtScheduler",
    "Problem",
    "Problems",
    "RandIntParam",
    "SweepSpec",
    "UniformParam",
    "dotted",
    "job_with",
    "set_path",
]

RESERVED_PATHS = ("name", "output_dir")  # the sweep runner sets these for every trial
SCHEDULERS = ("fifo", "asha", "hyperband", "pbt")


class FifoScheduler(_Spec):
    """Every trial runs to its end; no early stopping."""

    name: Literal["fifo"]


class AshaScheduler(_Spec):
    """Asynchronous successive halving: at each rung, stop all but the best 1/reduction_factor."""

    name: Literal["asha"]
    grace_period_steps: PositiveInt = Field(
        description="Steps every trial runs before it can be stopped (the first rung)."
    )
    reduction_factor: float = Field(default=3, gt=1, description="Rungs keep 1/this of trials.")
    max_steps: PositiveInt | None = Field(
        default=None, description="Steps of a full trial; default: the job's training.max_steps."
    )


class HyperbandScheduler(_Spec):
    """HyperBand: brackets of successive halving with different grace periods."""

    name: Literal["hyperband"]
    reduction_factor: float = Field(default=3, gt=1, description="Rungs keep 1/this of trials.")
    max_steps: PositiveInt | None = Field(
        default=None, description="Steps of a full trial; default: the job's training.max_steps."
    )


class PbtScheduler(_Spec):
    """Population-based training: poor trials copy a better trial's checkpoint and config,
    then perturb the `mutate` parameters."""

    name: Literal["pbt"]
    perturbation_interval_steps: PositiveInt = Field(
        description="Steps between exploit/explore decisions; a multiple of eval_every_steps."
    )
    mutate: list[str] | None = Field(
        default=None,
        description="Space parameters PBT changes during training; default: those under "
        "optimizer. (model shape parameters cannot change mid-training).",
    )
    quantile_fraction: float = Field(
        default=0.25, gt=0, le=0.5, description="Bottom share that copies the top share."
    )
    synch: bool = Field(
        default=False,
        description="Decide at each interval once every running trial has reached it (Tune's "
        "synchronous PBT): a trial that races ahead waits, so the population compares and "
        "copies checkpoints of the same step; slower, reproducible.",
    )


SchedulerSpec = Annotated[
    FifoScheduler | AshaScheduler | HyperbandScheduler | PbtScheduler,
    Field(discriminator="name"),
]


class BudgetSpec(_Spec):
    """How much the sweep may spend. Unset limits do not apply."""

    max_trials: PositiveInt | None = Field(
        default=None,
        description="Trials to run; required for random and tpe. With grid parameters under "
        "random search, a multiple of the grid size (each sample runs the whole grid).",
    )
    max_concurrent: PositiveInt | None = Field(
        default=None, description="Trials running at once; default: as many as the cluster fits."
    )
    time_limit_minutes: PositiveFloat | None = Field(
        default=None, description="Wall-clock limit of the whole sweep."
    )
    worker_hours: PositiveFloat | None = Field(
        default=None, description="Compute limit: the sum over trials of workers x hours run."
    )
    on_exhausted: Literal["finish", "stop"] = Field(
        default="finish",
        description="When time or worker-hours run out: finish (start no new trial, let "
        "running ones end) or stop (stop running trials now).",
    )

    @model_validator(mode="after")
    def _has_a_limit(self) -> BudgetSpec:
        limited = self.time_limit_minutes is not None or self.worker_hours is not None
        if "on_exhausted" in self.model_fields_set and not limited:
            raise Problems(
                [
                    Problem(
                        ("on_exhausted",),
                        "applies only when a time or compute budget runs out; set "
                        "time_limit_minutes or worker_hours, or remove it",
                        self.on_exhausted,
                    )
                ]
            )
        return self


class SweepSpec(_Spec):
    """A hyperparameter sweep: every trial is the base job with one point of the space."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]{0,62}$", description="Sweep name.")
    job: JobSpec = Field(
        description="The base job: an inline job spec, or the path of a job YAML file "
        "(relative to the sweep file)."
    )
    job_overrides: dict[str, Any] = Field(
        default_factory=dict,
        description="Dotted job fields set on a job given by path, like --set (e.g. "
        "training.eval_every_steps: 50); an inline job sets them itself.",
    )
    space: dict[str, ParamSpec] = Field(
        description="Dotted job field path → distribution (uniform, loguniform, randint, "
        "choice, grid)."
    )
    algorithm: Literal["random", "grid", "tpe"] = Field(
        default="random",
        description="random: sample (grid params enumerated per sample); grid: every "
        "parameter is a grid, run all points once; tpe: Optuna's TPE (no grid params).",
    )
    scheduler: SchedulerSpec = Field(
        default=FifoScheduler(name="fifo"),
        description="fifo, asha, hyperband or pbt; `scheduler: asha` is short for {name: asha}.",
    )
    metric: str = Field(description=f"The eval metric to optimise: {', '.join(EVAL_METRICS)}.")
    mode: Literal["min", "max"] = Field(
        description="Whether lower or higher is better; default: min for loss, max otherwise."
    )
    seed: int = Field(default=0, ge=0, description="Seed of the search algorithm.")
    budget: BudgetSpec = BudgetSpec()
    output_dir: str = Field(default="runs", description="The sweep writes under here/NAME.")

    @model_validator(mode="before")
    @classmethod
    def _shorthands(cls, data: Any, info: ValidationInfo) -> Any:
        if not isinstance(data, Mapping):
            return data
        data = dict(data)
        if isinstance(data.get("scheduler"), str):
            data["scheduler"] = {"name": data["scheduler"]}
        if "mode" not in data and isinstance(data.get("metric"), str):
            data["mode"] = "min" if lower_is_better(data["metric"]) else "max"
        job, overrides = data.get("job"), data.get("job_overrides")
        if isinstance(job, str):
            from deepyard.spec.sweep_load import resolve_job_file

            base_dir = Path((info.context or {}).get("base_dir", "."))
            data["job"] = resolve_job_file(job, overrides or {}, base_dir)
        elif isinstance(job, Mapping) and overrides:
            raise Problems(
                [
                    Problem(
                        ("job_overrides",),
                        "applies to a job given by path; with an inline job, set the "
                        "fields in job itself",
                    )
                ]
            )
        return data

    @field_validator("space")
    @classmethod
    def _real_job_fields(
        cls, space: dict[str, ParamSpec], info: ValidationInfo
    ) -> dict[str, ParamSpec]:
        """Each path is a job field that takes the parameter's values (checked on the
        base job; runs even when other sections have problems, so they show together)."""
        if not space:
            raise Problems(
                [
                    Problem(
                        (),
                        "is empty; add a parameter, e.g. "
                        "optimizer.lr: {type: loguniform, low: 1.0e-4, high: 1.0e-2}",
                    )
                ]
            )
        job = info.data.get("job")
        if not isinstance(job, JobSpec):
            return space  # the job has its own problems
        found = [_path_problem(p, space) or _sample_problem(job, p, v) for p, v in space.items()]
        problems = [problem for problem in found if problem is not None]
        if problems:
            raise Problems(problems)
        return space

    @model_validator(mode="after")
    def _consistent(self) -> SweepSpec:
        problems = [
            *self._metric_problems(),
            *self._algorithm_problems(),
            *self._scheduler_problems(),
        ]
        if problems:
            raise Problems(problems)
        return self

    @property
    def grid_size(self) -> int:
        """Points of the grid the `grid` parameters span (1 without any)."""
        return math.prod(len(p.values) for p in self.space.values() if isinstance(p, GridParam))

    @property
    def num_samples(self) -> int:
        """Ray Tune's num_samples: how often the search draws (each draw runs the grid)."""
        if self.algorithm == "grid":
            return 1
        assert self.budget.max_trials is not None
        return self.budget.max_trials // self.grid_size

    @property
    def num_trials(self) -> int:
        return self.num_samples * self.grid_size

    @property
    def max_steps(self) -> int | None:
        """Steps of a full trial, as asha and hyperband count them."""
        own = getattr(self.scheduler, "max_steps", None)
        return own if own is not None else self.job.training.max_steps

    @property
    def mutated(self) -> list[str]:
        """The parameters PBT perturbs during training."""
        if isinstance(self.scheduler, PbtScheduler) and self.scheduler.mutate is not None:
            return list(self.scheduler.mutate)
        return [p for p in self.space if p.startswith("optimizer.")]

    def _metric_problems(self) -> list[Problem]:
        reported = self.job.task_metrics
        if self.metric not in reported:
            task = self.job.task_name
            return [
                Problem(
                    ("metric",),
                    f"not an eval metric of model {self.job.model.name!r} ({task}); "
                    f"use {_one_of(reported)}",
                    self.metric,
                )
            ]
        problems = []
        better = "min" if lower_is_better(self.metric) else "max"
        if self.mode != better:
            problems.append(
                Problem(
                    ("mode",),
                    f"{self.metric} is {'lower' if better == 'min' else 'higher'}-is-better, so "
                    f"mode {self.mode} would pick the worst trial; use mode: {better}",
                    self.mode,
                )
            )
        if self.job.data.dataset is None and self.job.data.eval is None:
            problems.append(
                Problem(
                    ("metric",),
                    "is measured on eval data, but the job has none; set data.eval in the "
                    "job (or use a packaged data.dataset, which has a test split)",
                    self.metric,
                )
            )
        return problems

    def _algorithm_problems(self) -> list[Problem]:
        problems = []
        kinds = {path: param.type for path, param in self.space.items()}
        if self.algorithm == "grid":
            for path, kind in kinds.items():
                if kind != "grid":
                    problems.append(Problem(("space", path, "type"), _GRID_ONLY[kind], kind))
        elif self.algorithm == "tpe":
            for path, kind in kinds.items():
                if kind == "grid":
                    problems.append(
                        Problem(
                            ("space", path, "type"),
                            "algorithm tpe samples every parameter and cannot enumerate a "
                            "grid; use type: choice (same values), or algorithm: random",
                            kind,
                        )
                    )
        elif kinds and set(kinds.values()) == {"grid"}:
            problems.append(
                Problem(
                    ("algorithm",),
                    f"every parameter is a grid, so there are exactly {self.grid_size} "
                    "distinct trials and random search would repeat them; use algorithm: grid",
                    self.algorithm,
                )
            )
        return problems + self._trial_count_problems()

    def _trial_count_problems(self) -> list[Problem]:
        max_trials, grid = self.budget.max_trials, self.grid_size
        loc = ("budget", "max_trials")
        if self.algorithm == "grid":
            if max_trials is not None and max_trials < grid:
                return [
                    Problem(
                        loc,
                        f"is below the {grid} grid points ({self._grid_shape()}); "
                        f"raise it to {grid}, remove it, or shrink the grid",
                        max_trials,
                    )
                ]
            return []
        if max_trials is None:
            return [
                Problem(
                    loc,
                    f"required by algorithm {self.algorithm}: set how many trials to run "
                    "(budget: {max_trials: 20})",
                )
            ]
        if max_trials % grid:
            return [
                Problem(
                    loc,
                    f"is not a multiple of the grid's {grid} points ({self._grid_shape()}): "
                    f"each random sample runs the whole grid; use {_multiples(max_trials, grid)}",
                    max_trials,
                )
            ]
        return []

    def _scheduler_problems(self) -> list[Problem]:
        scheduler, training = self.scheduler, self.job.training
        if isinstance(scheduler, FifoScheduler):
            return []
        if training.eval_every_steps is None:
            return [
                Problem(
                    ("scheduler", "name"),
                    f"decides on {self.metric} during training, but the job evaluates only "
                    "at its end; set training.eval_every_steps in the job (with a job "
                    "file: job_overrides: {training.eval_every_steps: 50})",
                    scheduler.name,
                )
            ]
        if isinstance(scheduler, PbtScheduler):
            return self._pbt_problems(scheduler, training.eval_every_steps)
        if self.max_steps is None:
            return [
                Problem(
                    ("scheduler", "max_steps"),
                    "required: the job trains for training.epochs, so its step count is not "
                    "known here; set it to the steps of a full trial",
                )
            ]
        grace = getattr(scheduler, "grace_period_steps", 0)
        if grace > self.max_steps:
            return [
                Problem(
                    ("scheduler", "grace_period_steps"),
                    f"exceeds the {self.max_steps} steps of a full trial; use at most "
                    f"{self.max_steps}",
                    grace,
                )
            ]
        return []

    def _pbt_problems(self, pbt: PbtScheduler, eval_every: int) -> list[Problem]:
        problems = []
        if self.algorithm == "tpe":
            problems.append(
                Problem(
                    ("algorithm",),
                    "scheduler pbt picks new values itself and Ray Tune runs it only "
                    "with random or grid search; use algorithm: random",
                    self.algorithm,
                )
            )
        if not self.job.checkpoint.enabled:
            problems.append(
                Problem(
                    ("scheduler", "name"),
                    "copies better trials' weights through checkpoints, but the job does "
                    "not checkpoint; set checkpoint.every_steps in the job (e.g. "
                    f"{pbt.perturbation_interval_steps})",
                    pbt.name,
                )
            )
        interval = pbt.perturbation_interval_steps
        if interval % eval_every:
            problems.append(
                Problem(
                    ("scheduler", "perturbation_interval_steps"),
                    f"is not a multiple of training.eval_every_steps = {eval_every}: trials "
                    f"are compared when they report {self.metric}; use "
                    f"{_multiples(interval, eval_every)}",
                    interval,
                )
            )
        return problems + self._mutate_problems()

    def _mutate_problems(self) -> list[Problem]:
        if not self.mutated:
            return [
                Problem(
                    ("scheduler", "mutate"),
                    "no parameter to mutate: the space has none under optimizer.; list "
                    "the space parameters PBT may change during training",
                )
            ]
        problems = []
        for index, path in enumerate(self.mutated):
            param = self.space.get(path)
            if param is None:
                problems.append(
                    Problem(
                        ("scheduler", "mutate", index),
                        f"is not a space parameter; use {_one_of(self.space)}",
                        path,
                    )
                )
            elif not path.startswith("optimizer."):
                problems.append(
                    Problem(
                        ("scheduler", "mutate", index),
                        "PBT hands a trial another trial's weights and optimizer state, so "
                        "only optimizer values can change mid-training; remove it from "
                        "mutate (it is still searched once per trial)",
                        path,
                    )
                )
            elif isinstance(param, GridParam):
                problems.append(
                    Problem(
                        ("scheduler", "mutate", index),
                        f"space.{path} is a grid, which PBT cannot mutate; make it type: choice",
                        path,
                    )
                )
        return problems

    def _grid_shape(self) -> str:
        sizes = [f"{k}: {len(p.values)}" for k, p in self.space.items() if isinstance(p, GridParam)]
        return " x ".join(sizes)


_GRID_ONLY = {
    "uniform": "algorithm grid needs a finite list of values, and uniform is continuous; "
    "use type: grid with values: [...], or algorithm: random or tpe",
    "loguniform": "algorithm grid needs a finite list of values, and loguniform is "
    "continuous; use type: grid with values: [...], or algorithm: random or tpe",
    "randint": "algorithm grid enumerates explicit values only; use type: grid with "
    "values: [...], or algorithm: random or tpe",
    "choice": "algorithm grid enumerates grid parameters, and choice is sampled; write "
    "type: grid (same values), or use algorithm: random",
}


def _path_problem(path: str, space: Mapping[str, Any]) -> Problem | None:
    parts = path.split(".")
    if not all(part.strip() == part and part for part in parts):
        return Problem((path,), "is not a dotted job field path; write e.g. optimizer.lr")
    if parts[0] in RESERVED_PATHS:
        return Problem((path,), f"the sweep runner sets {parts[0]} for every trial; remove it")
    covering = [other for other in space if path.startswith(other + ".")]
    if covering:
        return Problem(
            (path,),
            f"overlaps space.{covering[0]}, which sets the whole of {covering[0]}; keep one",
        )
    return None


def _sample_problem(job: JobSpec, path: str, param: ParamSpec) -> Problem | None:
    """What is wrong with a parameter's samples, as one problem: the path when it is no
    job field (or every value fails alike), else the first value that breaks the job."""
    samples = param.samples()
    failures = []
    for sub, value, written in samples:
        try:
            job_with(job, {path: value})
        except ValueError as exc:  # pydantic's ValidationError is a ValueError
            text, about_path = param_problem(exc, path)
            if about_path:
                return Problem((path,), text)
            failures.append((sub, value, written, text))
    if not failures:
        return None
    texts = {text for *_, text in failures}
    if len(samples) > 1 and len(failures) == len(samples) and len(texts) == 1:
        why = texts.pop().removeprefix("makes the job invalid: ")
        return Problem((path,), f"every value breaks the job: {why}")
    sub, value, written, text = failures[0]
    if written:
        return Problem((path, *sub), text, value)
    return Problem((path,), f"draws values such as {value!r}, and {text}")


def _multiples(value: int, step: int) -> str:
    """The multiples of `step` nearest `value`, for a fix: `10 or 20`."""
    lower = value - value % step
    return f"{lower} or {lower + step}" if lower else str(step)


def _one_of(names: Any) -> str:
    return "one of: " + ", ".join(str(n) for n in names)
