"""The tasks deepyard trains, as plain data (no torch): what the spec checks against.

A task is what a model's output is trained against: its loss and its metrics. Each
entry names the class that implements it (`deepyard.tasks.base.Task`), imported only
when a worker trains or evaluates; the spec and the CLI read only this table.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

LabelKind = Literal["classes", "values", "none"]


@dataclass(frozen=True)
class TaskInfo:
    name: str
    summary: str
    labels: LabelKind  # what the data's label column holds (none: it is not read)
    metrics: tuple[str, ...]  # scalar eval metrics, besides num_samples
    best: str  # the metric a sweep or keep_best would usually rank by
    implementation: str  # "module:Class"
    lower_is_better: tuple[str, ...] = ("loss",)
    pipeline: bool = True  # one engine, one loss: its model can be cut into stages
    # Per-step figures its training step reports beside `loss` (`StepResult.extra`): step
    # events carry them and history.parquet has a column for each.
    step_metrics: tuple[str, ...] = ()


REGRESSION_METRICS = (
    "mse",
    "mae",
    "mse_seasonal_naive",
    "mae_seasonal_naive",
    "mse_vs_seasonal_naive",
    "loss",
)

TASKS: dict[str, TaskInfo] = {
    t.name: t
    for t in (
        TaskInfo(
            "classification",
            "class labels: cross-entropy; accuracy, precision/recall/F1, ROC-AUC",
            "classes",
            ("accuracy", "precision_macro", "recall_macro", "f1_macro", "roc_auc", "loss"),
            "accuracy",
            "deepyard.tasks.classification:Classification",
        ),
        TaskInfo(
            "regression",
            "real-valued labels: MSE; mse, mae in the data's units, and on windowed series "
            "the same against the seasonal-naive forecast",
            "values",
            REGRESSION_METRICS,
            "mse",
            "deepyard.tasks.regression:Regression",
            lower_is_better=REGRESSION_METRICS,
        ),
        TaskInfo(
            "reconstruction",
            "unsupervised: the output reproduces the input; MSE per pixel",
            "none",
            ("mse", "loss"),
            "mse",
            "deepyard.tasks.reconstruction:Reconstruction",
            ("loss", "mse"),
        ),
        TaskInfo(
            "gan",
            "generator vs discriminator (two engines); Frechet distance of classifier "
            "features, inception score",
            "none",
            ("frechet_distance", "inception_score", "loss_d", "loss_g", "loss"),
            "frechet_distance",
            "deepyard.tasks.gan:GanTask",
            ("loss", "frechet_distance"),
            pipeline=False,
            # discriminator loss, generator loss, the discriminator's mean probability on
            # real and on generated images
            step_metrics=("loss_d", "loss_g", "d_real", "d_fake"),
        ),
        TaskInfo(
            "language-modeling",
            "next token of the same row (labels unused; pads masked): token-mean "
            "cross-entropy, perplexity, next-token accuracy",
            "none",
            ("loss", "perplexity", "accuracy"),
            "perplexity",
            "deepyard.tasks.language_modeling:LanguageModeling",
            lower_is_better=("loss", "perplexity"),
        ),
    )
}


def names() -> list[str]:
    return sorted(TASKS)


def info(name: str) -> TaskInfo:
    try:
        return TASKS[name]
    except KeyError:
        known = ", ".join(names())
        raise ValueError(f"task {name!r} is not registered; use one of: {known}") from None


def all_metrics() -> list[str]:
    """Every metric some task reports, for spec fields that name one."""
    return sorted({m for task in TASKS.values() for m in task.metrics})


def lower_is_better(metric: str) -> bool:
    return any(metric in task.lower_is_better for task in TASKS.values())
