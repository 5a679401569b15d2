"""Job specs of the generative examples: keep_best and sweeps rank by the model's own
task metrics (a GAN has no accuracy), and lower Fréchet distances count as better."""

from __future__ import annotations

from pathlib import Path

import pytest

from deepyard import spec as specs
from deepyard.errors import SpecError
from deepyard.tasks import catalog

EXAMPLES = Path(__file__).resolve().parents[3] / "jobs" / "examples"
KEEP = "checkpoint={every_steps: 100, keep_best: {metric: %s, mode: min}}"


def test_gan_checkpoints_rank_by_frechet_distance() -> None:
    spec = specs.load(EXAMPLES / "fashion_mnist_dcgan.yaml", [KEEP % "frechet_distance"])
    assert spec.task_name == "gan"
    assert spec.checkpoint.keep_best is not None
    assert catalog.lower_is_better("frechet_distance")
    assert not catalog.lower_is_better("inception_score")


@pytest.mark.parametrize(
    ("example", "task"),
    [("fashion_mnist_dcgan.yaml", "gan"), ("fashion_mnist_autoencoder.yaml", "reconstruction")],
)
def test_classification_metrics_are_refused_naming_the_task(example: str, task: str) -> None:
    with pytest.raises(SpecError, match=rf"accuracy.*not reported .*\({task}\)"):
        specs.load(EXAMPLES / example, [KEEP % "accuracy"])


def test_autoencoder_reports_mse() -> None:
    spec = specs.load(EXAMPLES / "fashion_mnist_autoencoder.yaml", [KEEP % "mse"])
    assert spec.task_metrics == ("mse", "loss")
    assert catalog.info(spec.task_name).labels == "none"
