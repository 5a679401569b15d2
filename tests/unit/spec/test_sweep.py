"""Sweep specs: a good sweep loads with its trial count; every mistake in the space, the
algorithm, the scheduler or the budget is ONE line `sweep.yaml:LINE: field = value:
problem; fix` naming the parameter; the space becomes Ray Tune domains and a trial's
config becomes a valid JobSpec. No Ray cluster is started (Tune's domains need none)."""

from __future__ import annotations

from pathlib import Path
from textwrap import dedent

import pytest
import yaml
from typer.testing import CliRunner

from deepyard.cli.main import app
from deepyard.errors import SpecError
from deepyard.spec.sweep import SweepSpec
from deepyard.spec.sweep_load import load_sweep, load_sweep_text
from deepyard.sweep import build_searcher, to_tune, trial_scheduler, trial_spec

REPO = Path(__file__).parents[3]
EXAMPLE = REPO / "jobs" / "sweeps" / "digits_sweep.yaml"

# Line numbers matter: the cases below assert `sweep.yaml:LINE:` against this text.
# The base job (job.yaml) is the unit suite's base spec, evaluating every 10 steps.
SWEEP = dedent(
    """\
    name: s
    job: job.yaml
    space:
      optimizer.lr:
        type: loguniform
        low: 1e-4
        high: 1e-2
      model.args.hidden: {type: choice, values: [8, 16]}
    metric: accuracy
    budget:
      max_trials: 4
    """
)


@pytest.fixture
def job_dir(tmp_path: Path, base_spec_text: str) -> Path:
    (tmp_path / "job.yaml").write_text(base_spec_text + "  eval_every_steps: 10\n")
    return tmp_path


def sweep_of(job_dir: Path, text: str = SWEEP, overrides: tuple[str, ...] = ()) -> SweepSpec:
    return load_sweep_text(text, "sweep.yaml", overrides, base_dir=job_dir)


def problems_of(job_dir: Path, text: str, overrides: tuple[str, ...] = ()) -> list[str]:
    with pytest.raises(SpecError) as info:
        sweep_of(job_dir, text, overrides)
    assert info.value.exit_code == 2
    return info.value.problems


def test_a_good_sweep_loads(job_dir: Path) -> None:
    sweep = sweep_of(job_dir)
    assert sweep.job.name == "tiny" and sweep.job.training.eval_every_steps == 10
    assert sweep.mode == "max"  # the default for accuracy
    assert sweep.scheduler.name == "fifo"
    assert (sweep.grid_size, sweep.num_samples, sweep.num_trials) == (1, 4, 4)


def test_the_example_sweep_loads() -> None:
    sweep = load_sweep(EXAMPLE)
    assert sweep.job.name == "digits-cnn"
    assert sweep.job.training.max_steps == 240  # from job_overrides
    assert sweep.scheduler.name == "asha" and sweep.max_steps == 240
    assert set(sweep.space) == {"optimizer.lr", "model.args.width", "model.args.dropout"}
    assert (sweep.num_trials, sweep.budget.max_concurrent) == (8, 2)


# (id, edits of SWEEP, the substrings of the ONE problem line). Appended text starts on line 12.
BAD_SWEEPS = [
    (
        "low-above-high",
        [("low: 1e-4", "low: 0.1")],
        ["sweep.yaml:6: space.optimizer.lr.low = 0.1: is above high = 0.01; swap low and high"],
    ),
    (
        "log-of-zero",
        [("low: 1e-4", "low: 0")],
        ["sweep.yaml:6: space.optimizer.lr.low = 0: a log scale has no zero", "bound > 0"],
    ),
    (
        "empty-choice",
        [("values: [8, 16]", "values: []")],
        ["sweep.yaml:8: space.model.args.hidden.values = []: is empty; list at least one"],
    ),
    (
        "randint-high-is-exclusive",
        [("type: choice, values: [8, 16]", "type: randint, low: 8, high: 8")],
        ["sweep.yaml:8: space.model.args.hidden.high = 8:", "exclusive", "use high: 9"],
    ),
    (
        "not-a-job-field",
        [("optimizer.lr:", "optimizer.lrr:")],
        ["sweep.yaml:4: space.optimizer.lrr: optimizer.lrr is not a job field", "'lr'"],
    ),
    (
        "not-a-model-argument",
        [("model.args.hidden", "model.args.hiden")],
        ["sweep.yaml:8: space.model.args.hiden: every value breaks the job", "valid arguments"],
    ),
    (
        "a-value-outside-the-field",
        [("metric:", "  data.batch_size: {type: choice, values: [8, 0]}\nmetric:")],
        ["sweep.yaml:9: space.data.batch_size.values[1] = 0: not a valid data.batch_size"],
    ),
    (
        "float-range-on-an-integer-field",
        [("metric:", "  data.batch_size: {type: uniform, low: 4, high: 64}\nmetric:")],
        ["sweep.yaml:9: space.data.batch_size: draws values such as 34.5", "use type randint"],
    ),
    (
        "field-out-of-range",
        [("type: loguniform", "type: uniform"), ("low: 1e-4", "low: -1")],
        ["sweep.yaml:6: space.optimizer.lr.low = -1.0: not a valid optimizer.lr", "in range"],
    ),
    (
        "unknown-type",
        [("type: loguniform", "type: logunifrom")],
        ["sweep.yaml:4: space.optimizer.lr.type = 'logunifrom'", "did you mean 'loguniform'"],
    ),
    (
        "path-through-a-value",
        [("model.args.hidden", "training.max_steps.x")],
        ["sweep.yaml:8: space.training.max_steps.x: training.max_steps is a value (5), not a"],
    ),
    (
        "reserved-path",
        [("model.args.hidden", "output_dir")],
        ["sweep.yaml:8: space.output_dir: the sweep runner sets output_dir", "remove it"],
    ),
    (
        "grid-algorithm-with-a-continuous-param",
        [("type: choice", "type: grid"), ("", "algorithm: grid\n")],
        ["sweep.yaml:5: space.optimizer.lr.type = 'loguniform': algorithm grid", "type: grid"],
    ),
    (
        "tpe-with-a-grid",
        [("type: choice", "type: grid"), ("", "algorithm: tpe\n")],
        ["sweep.yaml:8: space.model.args.hidden.type = 'grid': algorithm tpe", "type: choice"],
    ),
    (
        "grid-budget-too-small",
        [
            (
                "    type: loguniform\n    low: 1e-4\n    high: 1e-2",
                "    {type: grid, values: [1e-3, 1e-2]}",
            ),
            ("type: choice", "type: grid"),
            ("", "algorithm: grid\n"),
            ("max_trials: 4", "max_trials: 3"),
        ],
        ["budget.max_trials = 3: is below the 4 grid points", "raise it to 4"],
    ),
    (
        "random-budget-not-a-multiple-of-the-grid",
        [("type: choice", "type: grid"), ("max_trials: 4", "max_trials: 5")],
        ["sweep.yaml:11: budget.max_trials = 5: is not a multiple", "use 4 or 6"],
    ),
    (
        "random-without-max-trials",
        [("budget:\n  max_trials: 4\n", "")],
        ["sweep.yaml: budget.max_trials: required by algorithm random"],
    ),
    (
        "asha-without-evaluations",
        [("", "scheduler: {name: asha, grace_period_steps: 2}\n")],
        ["scheduler.name = 'asha': decides on accuracy during training", "eval_every_steps"],
        ("job.training.eval_every_steps=null",),
    ),
    (
        "asha-grace-beyond-the-job",
        [("", "scheduler: {name: asha, grace_period_steps: 50}\n")],
        ["sweep.yaml:12: scheduler.grace_period_steps = 50: exceeds the 5 steps", "at most 5"],
    ),
    (
        "pbt-without-checkpoints",
        [("", "scheduler: {name: pbt, perturbation_interval_steps: 10}\n")],
        ["sweep.yaml:12: scheduler.name = 'pbt'", "set checkpoint.every_steps"],
    ),
    (
        "pbt-mutates-a-model-field",
        [
            (
                "",
                "scheduler: {name: pbt, perturbation_interval_steps: 10, "
                "mutate: [model.args.hidden]}\njob_overrides: {checkpoint.every_steps: 10}\n",
            )
        ],
        ["sweep.yaml:12: scheduler.mutate[0] = 'model.args.hidden'", "only optimizer values"],
    ),
    (
        "loss-maximised",
        [("metric: accuracy", "metric: loss\nmode: max")],
        ["sweep.yaml:10: mode = 'max': loss is lower-is-better", "use mode: min"],
    ),
    (
        "unknown-metric",
        [("metric: accuracy", "metric: acc")],
        [
            "sweep.yaml:9: metric = 'acc': not an eval metric of model 'mlp' "
            "(classification); use one of: accuracy"
        ],
    ),
    (
        "unknown-scheduler",
        [("", "scheduler: ashaa\n")],
        ["sweep.yaml:12: scheduler.name = 'ashaa': unknown name; did you mean 'asha'?"],
    ),
    (
        "unknown-key",
        [("", "budjet: {}\n")],
        ["sweep.yaml:12: budjet: unknown key; did you mean 'budget'?"],
    ),
    (
        "missing-job-file",
        [("job: job.yaml", "job: nope.yaml")],
        ["sweep.yaml:2: job = 'nope.yaml': no such file", "relative to the sweep file"],
    ),
    (
        "bad-job-override",
        [("", "job_overrides: {training.max_steps: 0}\n")],
        ["sweep.yaml:12: job_overrides: training.max_steps = 0: Input should be greater"],
    ),
    (
        "space-override",
        [],
        ["--set: space.optimizer.lr.low = 0.5: is above high = 0.01"],
        ("space.optimizer.lr.low=0.5",),
    ),
    (
        "override-of-a-missing-parameter",
        [],
        ["--set space.optimizer.lrr.low=1e-5: the space has no parameter optimizer.lrr"],
        ("space.optimizer.lrr.low=1e-5",),
    ),
]


@pytest.mark.parametrize(
    ("edits", "expected", "overrides"),
    [(case[1], case[2], case[3] if len(case) > 3 else ()) for case in BAD_SWEEPS],
    ids=[str(case[0]) for case in BAD_SWEEPS],
)
def test_each_mistake_is_one_line_naming_the_parameter_and_the_fix(
    job_dir: Path, edits: list[tuple[str, str]], expected: list[str], overrides: tuple[str, ...]
) -> None:
    text = SWEEP
    for old, new in edits:
        text = text.replace(old, new, 1) if old else text + new
    problems = problems_of(job_dir, text, overrides)
    assert len(problems) == 1, problems
    for part in expected:
        assert part in problems[0], f"{part!r} not in:\n{problems[0]}"


def test_problems_of_several_sections_come_together_in_file_order(job_dir: Path) -> None:
    text = SWEEP.replace("optimizer.lr:", "optimizer.lrr:").replace(
        "max_trials: 4", "max_trials: 0"
    )
    problems = problems_of(job_dir, "budjet: {}\n" + text)
    assert [p.split(": ")[0] for p in problems] == ["sweep.yaml:1", "sweep.yaml:5", "sweep.yaml:12"]
    assert "budjet: unknown key" in problems[0] and "space.optimizer.lrr:" in problems[1]
    assert "budget.max_trials = 0" in problems[2]


def test_an_inline_job_is_checked_in_place(job_dir: Path) -> None:
    inline = "job:\n  name: x\n  model: {name: mlp}\n  data: {dataset: digits, batch_size: 0}\n"
    text = SWEEP.replace("job: job.yaml\n", inline + "  training: {max_steps: 5}\n")
    problems = problems_of(job_dir, text)
    assert problems == [
        "sweep.yaml:5: job.data.batch_size = 0: Input should be greater than 0; "
        "change it to a value in range"
    ]


def test_a_mapping_validates_too_with_paths_relative_to_base_dir(job_dir: Path) -> None:
    raw = yaml.safe_load(SWEEP) | {"job_overrides": {"training.max_steps": 8}}
    sweep = SweepSpec.model_validate(raw, context={"base_dir": job_dir})
    assert sweep.job.training.max_steps == 8 and sweep.num_trials == 4
    inline = raw | {"job": sweep.job.model_dump(mode="json", exclude_unset=True)}
    with pytest.raises(ValueError, match="job_overrides: applies to a job given by path"):
        SweepSpec.model_validate(inline)


def test_overrides_reach_the_space_and_a_job_file(job_dir: Path) -> None:
    sweep = sweep_of(
        job_dir,
        overrides=(
            "space.optimizer.lr.high=0.05",
            "space.data.batch_size={type: grid, values: [4, 8]}",
            "job.training.max_steps=7",
        ),
    )
    assert sweep.space["optimizer.lr"].high == 0.05  # type: ignore[union-attr]
    assert sweep.grid_size == 2 and sweep.num_samples == 2
    assert sweep.job.training.max_steps == 7


def test_grid_size_and_trial_counts(job_dir: Path) -> None:
    grid = SWEEP.replace(
        "    type: loguniform\n    low: 1e-4\n    high: 1e-2",
        "    {type: grid, values: [1e-3, 3e-3, 1e-2]}",
    ).replace("type: choice", "type: grid")
    sweep = sweep_of(job_dir, grid + "algorithm: grid\n", ("budget.max_trials=null",))
    assert (sweep.grid_size, sweep.num_samples, sweep.num_trials) == (6, 1, 6)
    mixed = SWEEP.replace("type: choice", "type: grid").replace("max_trials: 4", "max_trials: 6")
    sweep = sweep_of(job_dir, mixed)
    assert (sweep.grid_size, sweep.num_samples, sweep.num_trials) == (2, 3, 6)


def test_to_tune_gives_tune_domains_with_the_bounds(job_dir: Path) -> None:
    from ray.tune.search.sample import Categorical, Float, Integer

    extra = (
        "  model.args.dropout: {type: uniform, low: 0.0, high: 0.5}\n"
        "  model.args.depth: {type: randint, low: 1, high: 4}\n"
        "  data.batch_size: {type: grid, values: [4, 8]}\n"
    )
    sweep = sweep_of(job_dir, SWEEP.replace("metric:", extra + "metric:"))
    space = to_tune(sweep.space)
    lr, dropout, depth = (
        space["optimizer.lr"],
        space["model.args.dropout"],
        space["model.args.depth"],
    )
    assert isinstance(lr, Float) and type(lr.get_sampler()).__name__ == "_LogUniform"
    assert (lr.lower, lr.upper) == (1e-4, 1e-2)
    assert isinstance(dropout, Float) and type(dropout.get_sampler()).__name__ == "_Uniform"
    assert (dropout.lower, dropout.upper) == (0.0, 0.5)
    assert isinstance(depth, Integer) and (depth.lower, depth.upper) == (1, 4)  # high exclusive
    assert isinstance(space["model.args.hidden"], Categorical)
    assert space["model.args.hidden"].categories == [8, 16]
    assert space["data.batch_size"] == {"grid_search": [4, 8]}


def test_trial_spec_applies_nested_paths(job_dir: Path) -> None:
    base = sweep_of(job_dir).job
    config = {"optimizer.lr": 0.02, "model.args.hidden": 32, "data.batch_size": 4}
    trial = trial_spec(base, config)
    assert trial.optimizer.lr == 0.02
    assert trial.model.args == {"hidden": 32}
    assert trial.data.batch_size == 4
    assert trial.training == base.training and base.optimizer.lr == 0.001  # base unchanged


def test_trial_spec_rejects_a_bad_value_naming_the_parameter(job_dir: Path) -> None:
    base = sweep_of(job_dir).job
    with pytest.raises(SpecError) as info:
        trial_spec(base, {"model.args.hidden": 16, "optimizer.lr": -1.0})
    assert info.value.problems == [
        "space.optimizer.lr = -1.0: not a valid optimizer.lr: Input should be greater than 0; "
        "change it to a value in range"
    ]


def test_search_algorithm_and_scheduler(job_dir: Path) -> None:
    from ray.tune.schedulers import ASHAScheduler, PopulationBasedTraining
    from ray.tune.search.optuna import OptunaSearch

    from deepyard.sweep.search import SpaceSampler

    sweep = sweep_of(job_dir, SWEEP + "algorithm: tpe\nseed: 7\n")
    searcher = build_searcher(sweep)
    assert isinstance(searcher, OptunaSearch)
    config = searcher.suggest("trial-1")
    assert config is not None and 1e-4 <= config["optimizer.lr"] <= 1e-2
    trial_spec(sweep.job, config)  # a suggestion is a valid trial

    asha = sweep_of(job_dir, SWEEP + "scheduler: {name: asha, grace_period_steps: 2}\n")
    assert isinstance(build_searcher(asha), SpaceSampler)
    scheduler = trial_scheduler(asha)
    assert isinstance(scheduler, ASHAScheduler)
    assert (scheduler._time_attr, scheduler._max_t, scheduler._reduction_factor) == ("step", 5, 3)

    pbt = sweep_of(
        job_dir,
        SWEEP + "scheduler: {name: pbt, perturbation_interval_steps: 10}\n",
        ("job.checkpoint.every_steps=10",),
    )
    scheduler = trial_scheduler(pbt)
    assert isinstance(scheduler, PopulationBasedTraining)
    assert list(scheduler._hyperparam_mutations) == ["optimizer.lr"]  # optimizer.* by default


def test_cli_validate_prints_the_space_or_every_problem(job_dir: Path) -> None:
    runner = CliRunner()
    path = job_dir / "sweep.yaml"
    path.write_text(SWEEP)
    result = runner.invoke(app, ["sweep", "validate", str(path)])
    assert result.exit_code == 0, result.output
    assert "4 trials of job tiny" in result.stderr and "optimizer.lr" in result.stderr
    assert "total: 4" in result.stdout
    path.write_text(SWEEP.replace("low: 1e-4", "low: 0.1"))
    result = runner.invoke(app, ["sweep", "validate", str(path), "--set", "budget.max_trials=0"])
    assert result.exit_code == 2
    assert result.stderr.startswith(f"error: invalid sweep spec {path}")
    assert f"{path}:6: space.optimizer.lr.low = 0.1" in result.stderr
    assert "--set: budget.max_trials = 0: Input should be greater than 0" in result.stderr
    assert "Traceback" not in result.output
