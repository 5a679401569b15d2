"""When checkpoints are taken and which survive: keep_best beside keep_last, and saves by
wall-clock minutes. One process (no torchrun): the policies do not depend on ranks."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from deepyard.checkpoint import catalog
from deepyard.checkpoint.store import Store

pytestmark = pytest.mark.integration
EXAMPLE = Path(__file__).resolve().parents[2] / "jobs" / "examples" / "digits_cnn.yaml"


def train(tmp_path: Path, *overrides: str) -> dict[str, Any]:
    command = [sys.executable, "-m", "deepyard.train", "--spec", str(EXAMPLE), "--json"]
    for item in (
        f"output_dir={tmp_path}",
        "resources.num_workers=1",
        "training.epochs=null",
        *overrides,
    ):
        command += ["--set", item]
    done = subprocess.run(command, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    summary: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return summary


def test_keep_best_keeps_the_best_scored_checkpoint_beside_the_newest(tmp_path: Path) -> None:
    summary = train(
        tmp_path,
        "training.max_steps=16",
        "training.eval_every_steps=4",
        "checkpoint.every_steps=4",
        "checkpoint.keep_last=1",
        "checkpoint.keep_best={metric: loss, mode: min, k: 1}",
    )
    assert summary["checkpoints"]["saved"] == 4
    evals = json.loads((Path(summary["run_dir"]) / "evals.json").read_text())
    best = min(evals, key=lambda e: e["loss"])["step"]
    store = Store.open(str(tmp_path / "digits-cnn" / "checkpoints"))
    [lineage] = catalog.lineages(store)
    kept = catalog.checkpoints(store, lineage)
    assert {c.step for c in kept} == {best, 16}
    for ckpt in kept:  # each remembers the evaluation it was ranked by
        assert ckpt.metric("loss") == next(e["loss"] for e in evals if e["step"] == ckpt.step)


def test_every_minutes_saves_on_the_clock(tmp_path: Path) -> None:
    summary = train(
        tmp_path,
        "training.max_steps=60",
        "checkpoint.every_minutes=0.002",  # 0.12 s: several saves within the run
        "checkpoint.keep_last=2",
    )
    saved = summary["checkpoints"]["saved"]
    assert 3 <= saved < 60, saved
    store = Store.open(str(tmp_path / "digits-cnn" / "checkpoints"))
    [lineage] = catalog.lineages(store)
    assert [c.step for c in catalog.checkpoints(store, lineage)][-1] == 60
    assert len(catalog.checkpoints(store, lineage)) == 2
