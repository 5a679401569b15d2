"""MultiEngine: each engine saves under one tag in its own folder through its own snapshot
engine (their host buffers are keyed by file name, which the engines share), and the
writer takes every file from the shared one; loading reads each engine's folder back."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from deepyard.train.multi_engine import MultiEngine


class Snapshots:
    """SnapshotEngine's surface: `copy`, `pending`, host buffers keyed by file name."""

    def __init__(self, copy: bool = True) -> None:
        self.copy, self.pending, self.buffers = copy, [], {}

    def save(self, state: dict[str, torch.Tensor], path: str) -> None:
        key = Path(path).name
        self.buffers[key] = {k: v.clone() for k, v in state.items()}
        self.pending.append((path, self.buffers[key]))

    def take(self) -> list[tuple[str, Any]]:
        out, self.pending = self.pending, []
        return out


class FakeEngine:
    """What MultiEngine calls on a DeepSpeed engine."""

    def __init__(self, value: float) -> None:
        self.weight = torch.full((3,), value)
        self.checkpoint_engine: Any = None
        self.loaded: list[tuple[str, str]] = []
        self.training = True

    def save_checkpoint(self, save_dir: str, tag: str, client_state: dict, save_latest: bool):
        assert save_latest is False
        self.checkpoint_engine.save({"w": self.weight}, f"{save_dir}/{tag}/model_states.pt")

    def load_checkpoint(self, load_dir: str, tag: str, **kwargs: Any):
        self.loaded.append((load_dir, tag))
        return f"{load_dir}/{tag}", {"deepyard_step": 5}

    def train(self, mode: bool = True) -> None:
        self.training = mode

    def get_lr(self) -> list[float]:
        return [0.1]


def test_both_engines_save_under_one_tag_without_sharing_buffers() -> None:
    gen, disc = FakeEngine(1.0), FakeEngine(2.0)
    multi = MultiEngine({"generator": gen, "discriminator": disc}, nn.Linear(1, 1))
    shared = Snapshots()
    multi.checkpoint_engine = shared  # what the Checkpointer's attach() does
    assert gen.checkpoint_engine is not disc.checkpoint_engine is not shared

    multi.save_checkpoint("/ckpt/lineage", tag="step-000000005", client_state={}, save_latest=False)
    files = dict(shared.take())
    assert sorted(files) == [
        "/ckpt/lineage/step-000000005/discriminator/model_states.pt",
        "/ckpt/lineage/step-000000005/generator/model_states.pt",
    ]
    # Same file name in both engines, and yet each file holds its own engine's weights.
    assert files["/ckpt/lineage/step-000000005/generator/model_states.pt"]["w"][0] == 1.0
    assert files["/ckpt/lineage/step-000000005/discriminator/model_states.pt"]["w"][0] == 2.0


def test_load_reads_each_engine_folder_and_eval_reaches_every_engine() -> None:
    gen, disc = FakeEngine(1.0), FakeEngine(2.0)
    multi = MultiEngine({"generator": gen, "discriminator": disc}, nn.Linear(1, 1))
    path, client = multi.load_checkpoint("/ckpt/lineage", tag="step-000000005")
    assert path == "/ckpt/lineage/step-000000005" and client == {"deepyard_step": 5}
    assert gen.loaded == [("/ckpt/lineage/step-000000005", "generator")]
    assert disc.loaded == [("/ckpt/lineage/step-000000005", "discriminator")]
    multi.eval()
    assert not gen.training and not disc.training and not multi.module.training
    multi.train()
    assert gen.training and multi.module.training
    assert multi.get_lr() == [0.1]
