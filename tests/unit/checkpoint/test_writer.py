"""Saving through DeepSpeed in a one-rank gloo group: publish, retention, export."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F

from deepyard import models
from deepyard.checkpoint import catalog
from deepyard.checkpoint.export import consolidated_state_dict, export_safetensors
from deepyard.checkpoint.manifest import problems
from deepyard.checkpoint.retention import RetentionPolicy
from deepyard.checkpoint.store import Store
from deepyard.checkpoint.writer import Checkpointer
from deepyard.spec import load_text
from deepyard.train.dist import WorkerContext, free_port, init_process_group
from deepyard.train.engine import build_engine

SPEC = """
name: tiny
model: {name: mlp, args: {hidden: 16}}
data: {dataset: digits, batch_size: 8}
training: {max_steps: 10}
parallelism: {zero_stage: 2}
"""


@pytest.fixture(scope="module")
def engine() -> Iterator[Any]:
    threads = torch.get_num_threads()
    init_process_group(WorkerContext(0, 1, 0, "127.0.0.1", free_port()), 1)
    spec = load_text(SPEC, "job.yaml")
    torch.manual_seed(0)
    model = models.build(spec.model.name, spec.model.args, (64,), 10)
    engine = build_engine(spec, model, total_steps=10)
    try:
        yield engine
    finally:
        dist.destroy_process_group()
        torch.set_num_threads(threads)


def train_a_step(engine: Any) -> None:
    inputs, labels = torch.randn(8, 64), torch.randint(0, 10, (8,))
    loss = F.cross_entropy(engine(inputs), labels)
    engine.backward(loss)
    engine.step()


def saver(store: Store, events: list[dict[str, Any]], keep_last: int = 2) -> Checkpointer:
    lineage, _ = catalog.open_lineage(store, "tiny", "hash", restart=False)
    return Checkpointer(
        store, lineage, 0, 1, "n1", RetentionPolicy(keep_last), Path("/nonexistent"), events.append
    )


def test_save_publishes_a_verified_manifest_and_retention_keeps_the_newest(
    engine: Any, tmp_path: Path
) -> None:
    store, events = Store.open(str(tmp_path / "ckpts")), []
    checkpointer = saver(store, events)
    checkpointer.attach(engine)
    for step in (2, 4, 6):
        train_a_step(engine)
        checkpointer.save(engine, step, {"step": step, "metrics": {"loss": 1.0}}, {"c": step})
    checkpointer.close()

    found = catalog.checkpoints(store, checkpointer.lineage)
    assert [c.step for c in found] == [4, 6]  # keep_last=2
    newest = found[-1]
    assert newest.manifest is not None and problems(store, newest.prefix, newest.manifest) == []
    assert newest.manifest["ranks"][0]["cursor"] == {"c": 6}
    assert {"mp_rank_00_model_states.pt", "rank-0.json"} <= {
        p.name for p in store.local_path(newest.prefix).iterdir()
    }
    assert any(name.endswith("optim_states.pt") for name in newest.manifest["files"])
    saved = [e for e in events if e["type"] == "checkpoint_saved"]
    assert [e["step"] for e in saved] == [2, 4, 6]
    assert saved[-1]["size_bytes"] == newest.manifest["size_bytes"] > 0
    assert all(e["size_bytes"] > 0 for e in saved)


def test_export_gives_the_engine_weights_as_safetensors(engine: Any, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    store = Store.open(str(tmp_path / "ckpts"))
    checkpointer = saver(store, [])
    checkpointer.attach(engine)
    train_a_step(engine)
    checkpointer.save(engine, 1, {"step": 1, "spec": {"model": {"name": "mlp"}}}, {})
    checkpointer.close()
    [ckpt] = catalog.checkpoints(store, checkpointer.lineage)
    weights = consolidated_state_dict(store, ckpt)
    live = engine.module.state_dict()
    assert set(weights) == set(live)
    for name, tensor in live.items():
        assert torch.equal(weights[name], tensor.float()), name

    out = tmp_path / "model.safetensors"
    info = export_safetensors(store, ckpt, out)
    assert info["step"] == 1
    loaded = load_file(str(out))
    assert torch.equal(loaded[next(iter(live))], next(iter(live.values())).float())
    assert json.loads(json.dumps(info))["tensors"] == len(live)


def test_cli_lists_verifies_and_exports_and_verify_catches_a_flipped_byte(
    engine: Any, tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    from deepyard.cli.main import app

    uri = str(tmp_path / "ckpts")
    checkpointer = saver(Store.open(uri), [])
    checkpointer.attach(engine)
    for step in (1, 2):
        train_a_step(engine)
        checkpointer.save(engine, step, {"step": step, "metrics": {"accuracy": 0.5}}, {})
    checkpointer.close()
    cli = CliRunner()

    listed = cli.invoke(app, ["checkpoint", "list", uri, "--json"])
    assert listed.exit_code == 0, listed.output
    rows = json.loads(listed.stdout)
    assert [(r["step"], r["state"]) for r in rows] == [(1, "published"), (2, "published")]

    assert cli.invoke(app, ["checkpoint", "verify", uri]).exit_code == 0
    out = tmp_path / "w.safetensors"
    exported = cli.invoke(app, ["checkpoint", "export", uri, "--out", str(out)])
    assert exported.exit_code == 0, exported.output
    assert out.stat().st_size > 0 and "step 2" in exported.output

    [newest] = [
        c for c in catalog.checkpoints(Store.open(uri), checkpointer.lineage) if c.step == 2
    ]
    victim = next(Store.open(uri).local_path(newest.prefix).glob("*optim_states.pt"))
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0x01
    victim.write_bytes(bytes(data))
    verified = cli.invoke(app, ["checkpoint", "verify", uri])
    assert verified.exit_code == 1
    assert victim.name in verified.output and "corrupt" in verified.output
    # export without --step falls back to the newest valid one, and says why
    fallback = cli.invoke(app, ["checkpoint", "export", uri, "--out", str(out)])
    assert fallback.exit_code == 0 and "step 1" in fallback.output
