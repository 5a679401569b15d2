"""Process-group set-up shared by Ray workers and torchrun: env → torch.distributed."""

from __future__ import annotations

import logging
import os
import socket
import warnings
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from deepyard.errors import SpecError


@dataclass(frozen=True)
class WorkerContext:
    rank: int
    world_size: int
    local_rank: int
    master_addr: str
    master_port: int
    # On GPU: this node's gang GPUs, shown to every local worker, and the one this rank
    # drives (its index among them). None: every GPU is visible and local_rank is the index.
    visible_devices: str | None = None
    device_index: int | None = None

    @classmethod
    def from_env(cls) -> WorkerContext:
        """What torchrun (or a single plain process) sets."""
        return cls(
            rank=int(os.environ.get("RANK", 0)),
            world_size=int(os.environ.get("WORLD_SIZE", 1)),
            local_rank=int(os.environ.get("LOCAL_RANK", 0)),
            master_addr=os.environ.get("MASTER_ADDR", "127.0.0.1"),
            master_port=int(os.environ.get("MASTER_PORT", 0) or free_port()),
        )

    def export(self) -> None:
        os.environ.update(
            RANK=str(self.rank),
            WORLD_SIZE=str(self.world_size),
            LOCAL_RANK=str(self.local_rank),
            LOCAL_SIZE=os.environ.get("LOCAL_SIZE", str(self.world_size)),
            MASTER_ADDR=self.master_addr,
            MASTER_PORT=str(self.master_port),
        )


def free_port() -> int:
    """A free TCP port from the kernel's ephemeral range (outside Ray's 10002-19999)."""
    with socket.socket() as sock:
        sock.bind(("", 0))
        return int(sock.getsockname()[1])


def init_process_group(
    ctx: WorkerContext, cpus: int, gpus: int = 0, timeout_s: float = 600.0
) -> torch.device:
    """Join the job's process group: NCCL when the job asks for GPUs, gloo otherwise;
    returns this rank's device."""
    torch.set_num_threads(cpus)  # oversubscribed threads made CPU steps 3-4x slower
    ctx.export()
    if ctx.visible_devices is not None:  # before anything initialises CUDA
        os.environ["CUDA_VISIBLE_DEVICES"] = ctx.visible_devices
    on_gpu = gpus > 0
    if on_gpu and not torch.cuda.is_available():
        raise SpecError(
            f"resources.gpus_per_worker={gpus}, but rank {ctx.rank} on {socket.gethostname()} "
            f"sees no CUDA device (torch {torch.__version__}, CUDA build: "
            f"{torch.version.cuda or 'none'}); run on nodes with GPUs and a CUDA build of "
            "torch, or set resources.gpus_per_worker: 0 to train on CPU"
        )
    _quiet_deepspeed(on_gpu)
    import importlib

    import deepspeed

    # importlib: `deepspeed.comm.torch` as an attribute is the re-exported torch package.
    ds_torch = importlib.import_module("deepspeed.comm.torch")

    if not on_gpu:
        # The CPU shared-memory all-reduce op only serves inference and costs a 1-3 minute
        # compile on first use; training all-reduces go through gloo.
        ds_torch.build_shm_op = lambda: None  # type: ignore[attr-defined]
    deepspeed.init_distributed(
        dist_backend="nccl" if on_gpu else "gloo",
        timeout=timedelta(seconds=timeout_s),
        verbose=False,
    )
    if on_gpu:
        index = ctx.local_rank if ctx.device_index is None else ctx.device_index
        torch.cuda.set_device(index)
        return torch.device("cuda", index)
    return torch.device("cpu")


def _quiet_deepspeed(on_gpu: bool) -> None:
    os.environ.setdefault("DS_ACCELERATOR", "cuda" if on_gpu else "cpu")
    for name in ("DeepSpeed", "deepspeed"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # Known, harmless: DeepSpeed's own use of a deprecated collective; read-only Arrow
    # buffers we never write to.
    warnings.filterwarnings("ignore", category=FutureWarning, module="torch.distributed")
    warnings.filterwarnings("ignore", message="The given NumPy array is not writable")


def sum_over_ranks(count: int, device: torch.device) -> int:
    """`count` summed over every rank (each rank calls it; one process: itself)."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return count
    total = torch.tensor([count], dtype=torch.int64, device=device)
    dist.all_reduce(total)
    return int(total.item())
