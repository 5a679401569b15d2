"""Which checkpoint a rerun resumes from: the newest that verifies, with a warning for
each one skipped; lineages separate fresh starts."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from deepyard.checkpoint import catalog
from deepyard.checkpoint.manifest import problems, step_dir
from deepyard.checkpoint.store import Store


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store.open(str(tmp_path / "ckpts"))


def test_newest_valid_skips_a_corrupt_newest_and_names_the_bad_file(
    store: Store, publish: Callable[..., Path]
) -> None:
    lineage, _ = catalog.open_lineage(store, "job", "hash", restart=False)
    publish(store, lineage, 10)
    newest = publish(store, lineage, 20)
    data = bytearray(newest.read_bytes())
    data[3] ^= 0xFF  # one flipped byte, same size
    newest.write_bytes(bytes(data))
    warnings: list[str] = []
    chosen = catalog.newest_valid(store, lineage, warnings.append)
    assert chosen is not None and chosen.step == 10
    assert len(warnings) == 1
    assert "step 20" in warnings[0] and "model.pt" in warnings[0] and "corrupt" in warnings[0]


def test_unpublished_and_truncated_checkpoints_are_never_chosen(
    store: Store, publish: Callable[..., Path]
) -> None:
    lineage, _ = catalog.open_lineage(store, "job", "hash", restart=False)
    publish(store, lineage, 10)
    store.put_bytes(f"{lineage}/{step_dir(30)}/model.pt", b"half")  # no manifest
    truncated = publish(store, lineage, 20)
    truncated.write_bytes(b"wei")
    warnings: list[str] = []
    chosen = catalog.newest_valid(store, lineage, warnings.append)
    assert chosen is not None and chosen.step == 10
    assert any("3 bytes, manifest says 7" in w for w in warnings)


def test_missing_file_is_a_problem(store: Store, publish: Callable[..., Path]) -> None:
    lineage, _ = catalog.open_lineage(store, "job", "hash", restart=False)
    publish(store, lineage, 10).unlink()
    ckpt = catalog.checkpoints(store, lineage)[0]
    assert [p.endswith("model.pt: missing") for p in problems(store, ckpt.prefix, ckpt.manifest)]


def test_rerun_continues_the_newest_lineage_and_restart_opens_a_new_one(store: Store) -> None:
    first, new = catalog.open_lineage(store, "job", "hash", restart=False)
    assert new
    again, new = catalog.open_lineage(store, "job", "hash", restart=False)
    assert (again, new) == (first, False)
    fresh, new = catalog.open_lineage(store, "job", "hash", restart=True)
    assert new and fresh != first
    assert catalog.lineages(store) == sorted([first, fresh])
    assert catalog.newest_valid(store, fresh, print) is None
