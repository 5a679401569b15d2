"""Each model family trains a CI-sized version on 2 real DeepSpeed workers and its loss
falls; the full-size runs are the example jobs (docs/models.md has their figures)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from deepyard.launch.local import run_job

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


def losses(events: list[dict[str, Any]]) -> list[float]:
    return [e["loss"] for e in events if e["type"] == "step"]


@pytest.mark.parametrize("name", ["cnn", "inception", "mobilenet", "mlp"])
def test_image_family_trains_on_two_workers(ray_session, digits_job, name: str) -> None:
    """8x8 digits, 40 steps: the loss falls and the model is far above chance (0.10)."""
    args = "model.args={}" if name == "mlp" else "model.args={width: 8, stages: 2}"
    spec, sources = digits_job(
        f"model.name={name}", args, "training.epochs=null", "training.max_steps=40"
    )
    events: list[dict[str, Any]] = []
    summary = run_job(spec, sources, events.append, print)

    curve = losses(events)
    assert len(curve) == 40
    assert np.mean(curve[-10:]) < 0.7 * np.mean(curve[:10]), curve
    assert summary["eval"]["num_samples"] == 360
    assert summary["eval"]["accuracy"] > 0.5
    assert 0.5 < summary["eval"]["roc_auc"] <= 1.0
    assert len(summary["eval_classes"]["confusion"]) == 10
