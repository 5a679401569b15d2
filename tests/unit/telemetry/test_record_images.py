"""Pictures sent by an evaluation (image events) land in the run directory as PNG files;
the event record keeps their path, not their bytes; a path leaving the run is refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from deepyard.tasks.images import grid_png, grid_size
from deepyard.telemetry import RunRecorder
from deepyard.train.loop import image_event


def test_image_event_is_written_into_the_run(tmp_path: Path) -> None:
    recorder = RunRecorder(tmp_path / "run", "tiny", "r1", started_at=0.0)
    png = grid_png([torch.rand(3, 1, 8, 8)])
    recorder.add(image_event("samples", 100, png))
    recorder.finish({}, "succeeded")

    written = tmp_path / "run" / "samples" / "step_000100.png"
    assert written.read_bytes() == png
    assert Image.open(written).size == grid_size(1, 3, 8, 8)
    (event,) = [json.loads(line) for line in (tmp_path / "run" / "events.jsonl").open()]
    assert event["path"] == "samples/step_000100.png" and "png_base64" not in event


def test_image_path_must_stay_inside_the_run(tmp_path: Path) -> None:
    recorder = RunRecorder(tmp_path / "run", "tiny", "r1", started_at=0.0)
    event = {**image_event("samples", 1, b"png"), "path": "../outside.png"}
    with pytest.raises(ValueError, match="must stay inside the run directory"):
        recorder.add(event)
    assert not (tmp_path / "outside.png").exists()
