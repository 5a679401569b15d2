"""Saving on a worker: DeepSpeed's state copied to host memory, written in the background.

`Checkpointer.save()` runs on the training thread at a step boundary. DeepSpeed's
`save_checkpoint` hands each state dict to `SnapshotEngine.save`, which only copies its
tensors to host memory; the training thread then goes on. A background thread writes
the files, uploads them when the store is remote, hashes them and writes this rank's
record; on rank 0 it then waits for every rank's record, writes the manifest (the
checkpoint now exists) and applies retention. A second save first waits for the first;
a write that failed is raised on the training thread at the next save or at close.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, cast

import torch
import torch.distributed as dist

from deepyard.checkpoint import catalog, rng
from deepyard.checkpoint.manifest import MANIFEST, build_manifest, rank_record_name, step_dir
from deepyard.checkpoint.retention import RetentionPolicy
from deepyard.checkpoint.store import Store
from deepyard.errors import CheckpointError

if TYPE_CHECKING:
    from deepyard.checkpoint.snapshot import SnapshotEngine

log = logging.getLogger(__name__)
Emit = Callable[[dict[str, Any]], None]
RECORD_TIMEOUT_S = 600.0
HEARTBEAT_S = 10.0
FULL_BELOW_BYTES = 16 * 2**20  # a failed write with less free than this: the disk is full


class Checkpointer:
    """One rank's saves into `<store>/<lineage>/step-N/`."""

    def __init__(
        self,
        store: Store,
        lineage: str,
        rank: int,
        world_size: int,
        nonce: str,
        policy: RetentionPolicy,
        staging: Path,
        emit: Emit,
        copy: bool = True,
    ) -> None:
        self.store, self.lineage, self.nonce = store, lineage, nonce
        self.rank, self.world_size, self.policy = rank, world_size, policy
        self.staging, self.emit = staging, emit
        # DeepSpeed writes below save_dir/<tag>/: straight into a local store, else staged.
        self.save_dir = store.local_path(lineage) if store.is_local else staging / lineage
        # Imported here: importing DeepSpeed before the process group set it up prints an
        # accelerator warning on stdout (the torchrun summary line must stay alone there).
        from deepyard.checkpoint.snapshot import SnapshotEngine

        self.snapshots: SnapshotEngine = SnapshotEngine(copy)
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="deepyard-checkpoint")
        self._pending: Future[None] | None = None
        self.saved_steps: list[int] = []

    def attach(self, engine: Any) -> None:
        engine.checkpoint_engine = self.snapshots

    def save(self, engine: Any, step: int, meta: dict[str, Any], cursor: dict[str, Any]) -> None:
        """Snapshot now, write in the background."""
        self.wait()  # a second save waits for the first
        tag = step_dir(step)
        if self.rank == 0:  # a crashed attempt may have left a half-written save here
            self.store.delete_dir(f"{self.lineage}/{tag}")
            shutil.rmtree(self.save_dir / tag, ignore_errors=True)
        dist.barrier()
        engine.save_checkpoint(
            str(self.save_dir), tag=tag, client_state={"deepyard_step": step}, save_latest=False
        )
        record = {"rank": self.rank, "nonce": self.nonce, "cursor": cursor, "rng": rng.capture()}
        files = self.snapshots.take()
        self._pending = self._executor.submit(self._write, tag, files, record, meta)

    def wait(self) -> None:
        """Block until the save in flight is written; raise its error here if it failed."""
        pending, self._pending = self._pending, None
        if pending is None:
            return
        try:
            # A long write is progress, not a hang: say so while waiting.
            while not _done(pending, HEARTBEAT_S):
                self.emit({"type": "heartbeat", "what": "checkpoint write", "t": time.time()})
            pending.result()
        except CheckpointError:
            raise
        except Exception as exc:
            raise CheckpointError(
                f"checkpoint.uri={self.store.shown_uri}: writing a checkpoint failed: "
                f"{type(exc).__name__}: {exc}"
            ) from exc

    def close(self) -> None:
        try:
            self.wait()
        finally:
            self._executor.shutdown(wait=True)
            shutil.rmtree(self.staging, ignore_errors=True)
            with contextlib.suppress(OSError):  # the attempt's folder, once no rank uses it
                self.staging.parent.rmdir()

    def _write(
        self, tag: str, files: list[tuple[str, Any]], record: dict[str, Any], meta: dict[str, Any]
    ) -> None:
        started = time.perf_counter()
        prefix = f"{self.lineage}/{tag}"
        hashes = {}
        for path, state in files:
            local = Path(path)
            name = local.relative_to(self.save_dir / tag).as_posix()
            sha256, size = _torch_save(state, local, f"{self.store.shown_uri}/{prefix}/{name}")
            if not self.store.is_local:  # upload (hashed again while read back) and drop
                sha256, size = self.store.put_file(local, f"{prefix}/{name}")
                local.unlink()
            hashes[name] = {"sha256": sha256, "size_bytes": size}
        record["files"] = hashes
        self.store.put_bytes(f"{prefix}/{rank_record_name(self.rank)}", json.dumps(record).encode())
        if self.rank != 0:
            return
        manifest = build_manifest(meta, self._records(prefix), prefix)
        self.store.put_bytes(f"{prefix}/{MANIFEST}", json.dumps(manifest, indent=1).encode())
        self.saved_steps.append(meta["step"])
        self.emit(
            {
                "type": "checkpoint_saved",
                "step": meta["step"],
                "write_s": round(time.perf_counter() - started, 4),
                "size_bytes": manifest["size_bytes"],
                "t": time.time(),
            }
        )
        for old in self.policy.decide(catalog.checkpoints(self.store, self.lineage)):
            self.store.delete_dir(old.prefix)

    def _records(self, prefix: str) -> list[dict[str, Any]]:
        """Every rank's record of this save (rank 0 waits for them)."""
        records: dict[int, dict[str, Any]] = {}
        deadline = time.monotonic() + RECORD_TIMEOUT_S
        while len(records) < self.world_size:
            for rank in range(self.world_size):
                key = f"{prefix}/{rank_record_name(rank)}"
                if rank in records or not self.store.exists(key):
                    continue
                record = json.loads(self.store.get_bytes(key))
                if record.get("nonce") == self.nonce:
                    records[rank] = record
            if len(records) < self.world_size:
                if time.monotonic() > deadline:
                    missing = sorted(set(range(self.world_size)) - set(records))
                    raise CheckpointError(
                        f"{self.store.shown_uri}/{prefix}: ranks {missing} did not finish "
                        f"their part of the save within {RECORD_TIMEOUT_S:.0f} s; not published"
                    )
                time.sleep(0.05)
        return list(records.values())


def _done(future: Future[None], timeout_s: float) -> bool:
    try:
        future.exception(timeout=timeout_s)
    except TimeoutError:
        return False
    return True


class _HashingWriter:
    """A write-only file that hashes what passes through (torch.save writes sequentially)."""

    def __init__(self, out: BinaryIO) -> None:
        self.out, self.digest, self.size = out, hashlib.sha256(), 0

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        self.size += len(data)
        return self.out.write(data)

    def flush(self) -> None:
        self.out.flush()


def _torch_save(state: Any, path: Path, shown: str) -> tuple[str, int]:
    """torch.save through a temporary name, hashed while written and fsynced, so a crash
    leaves no plausible file; returns (sha256, size)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as out:
            writer = _HashingWriter(out)
            torch.save(state, cast(BinaryIO, writer))
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except (OSError, RuntimeError) as exc:
        tmp.unlink(missing_ok=True)
        free = shutil.disk_usage(path.parent).free
        # torch's zip writer reports a full disk as "unexpected pos", not ENOSPC.
        full = getattr(exc, "errno", None) == errno.ENOSPC or free < FULL_BELOW_BYTES
        reason = "no space left on device" if full else str(exc).splitlines()[0]
        raise CheckpointError(
            f"cannot write checkpoint file {shown}: {reason} ({free} bytes free on "
            f"{path.parent}); free space or point checkpoint.uri at a larger disk"
        ) from None
    return writer.digest.hexdigest(), writer.size
