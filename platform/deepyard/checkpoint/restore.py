"""Resuming on a worker: DeepSpeed state, this rank's data cursor and RNG states.

Same layout: every rank loads its own ZeRO partition, cursor and RNG states, and the run
continues bit for bit. Another layout (world size, or data x pipeline x tensor split):
ZeRO-partitioned state is first converted to DeepSpeed's universal checkpoint format
(once per node; AutoTP's tensor slices joined whole by DeepSpeed and cut anew when
loaded; renamed for a pipeline, see `relayout`); without ZeRO partitions (stage 0),
tensor slices are cut for the new tensor degree by `tensor_slices`. The data cursors of
all old replicas are resharded over the new ones, so the rest of the epoch is neither
skipped nor repeated; RNG states restart from the seed and step.
"""

from __future__ import annotations

import random
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from deepyard.checkpoint import relayout, rng, tensor_slices
from deepyard.checkpoint.manifest import Checkpoint
from deepyard.checkpoint.store import Store
from deepyard.data import engines
from deepyard.errors import CheckpointError
from deepyard.train.topology import Layout


def local_copy(store: Store, checkpoint: Checkpoint, staging: Path) -> Path:
    """A local directory holding `<tag>/` of the checkpoint (downloaded if the store is remote)."""
    if store.is_local:
        return store.local_path(checkpoint.lineage)
    assert checkpoint.manifest is not None
    root = staging / checkpoint.lineage
    tag = checkpoint.prefix.rsplit("/", 1)[1]
    for name in checkpoint.manifest["files"]:
        target = root / tag / name
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            store.get_file(f"{checkpoint.prefix}/{name}", target)
    return root


def to_universal(
    load_dir: Path,
    tag: str,
    out_dir: Path,
    local_rank: int,
    then: Callable[[Path], None] = lambda _: None,
) -> Path:
    """Convert `load_dir/tag` to the universal format under `out_dir/tag` (one rank per
    node), and apply `then` to the converted folder before the other ranks read it."""

    def convert(tmp: Path) -> None:
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "deepspeed.checkpoint.ds_to_universal",
                "--input_folder",
                str(load_dir / tag),
                "--output_folder",
                str(tmp),
                "--inject_missing_state",
                "--num_extract_workers",
                "1",
                "--num_merge_workers",
                "1",
            ],
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or [f"exit code {done.returncode}"])[-1]
            raise CheckpointError(
                f"converting {load_dir / tag} for another layout failed: {last}; "
                "resume with the layout (resources.num_workers, parallelism) it was saved with"
            )
        then(tmp)

    return _once_per_node(out_dir, tag, local_rank, convert)


def to_tensor_degree(
    load_dir: Path, tag: str, out_dir: Path, local_rank: int, manifest: dict[str, Any], tensor: int
) -> Path:
    """A ZeRO stage 0 tensor-parallel checkpoint `load_dir/tag` cut for `tensor` tensor
    ranks under `out_dir/tag` (one rank per node; see `tensor_slices`)."""
    return _once_per_node(
        out_dir,
        tag,
        local_rank,
        lambda tmp: tensor_slices.reslice(load_dir / tag, manifest, tensor, tmp),
    )


def _once_per_node(
    out_dir: Path, tag: str, local_rank: int, convert: Callable[[Path], None]
) -> Path:
    """`convert(folder)` on one rank per node into `out_dir/tag`, published by a rename
    once complete; every rank waits for it. Returns `out_dir`."""
    if local_rank == 0 and not (out_dir / tag).exists():
        tmp = out_dir / f"{tag}.converting"
        shutil.rmtree(tmp, ignore_errors=True)
        convert(tmp)
        tmp.rename(out_dir / tag)
    if dist.is_initialized():
        dist.barrier()
    return out_dir


def restore(
    engine: Any,
    loader: engines.Loader,
    checkpoint: Checkpoint,
    load_dir: Path,
    rank: int,
    layout: Layout,
    batch_size: int,
    seed: int,
    saved_dir: Path | None = None,
) -> None:
    """Load model, optimizer and scheduler state, then this rank's cursor and RNG states.

    `load_dir` may hold the universal conversion; `saved_dir` is then the checkpoint as
    saved, whose module buffers (batch-norm statistics) the universal load skips.
    """
    manifest = checkpoint.manifest
    assert manifest is not None
    tag = checkpoint.prefix.rsplit("/", 1)[1]
    path, _ = engine.load_checkpoint(
        str(load_dir), tag=tag, load_optimizer_states=True, load_lr_scheduler_states=True
    )
    if path is None:
        raise CheckpointError(f"DeepSpeed found no checkpoint in {load_dir / tag}")
    if saved_dir is not None and saved_dir != load_dir:
        buffers = relayout.saved_buffers(saved_dir / tag, manifest)
        relayout.load_buffers(engine.module, buffers, manifest)
    saved = relayout.saved_layout(manifest)
    if saved == layout:
        loader.load_state_dict(manifest["ranks"][rank]["cursor"])
        rng.restore(manifest["ranks"][rank]["rng"])
        return
    try:
        loader.load_state_dict(relayout.cursor(manifest, layout, rank, batch_size))
    except (KeyError, ValueError) as exc:
        raise CheckpointError(
            f"the data position of checkpoint step {checkpoint.step} (saved on "
            f"{saved.world_size} workers, {saved.data} data replicas) cannot move to "
            f"{layout.data} replicas: {exc}; resume with resources.num_workers="
            f"{saved.world_size} and the parallelism it was saved with"
        ) from None
    # Per-rank generator states do not carry over to other ranks: derive fresh ones.
    fresh = seed * 1_000_003 + checkpoint.step * 1009 + rank
    random.seed(fresh)
    np.random.seed(fresh % 2**32)
    torch.manual_seed(fresh)
