"""The bare loops of the GPU check: deepyard's GPT trained without deepyard's loop.

  torch: plain PyTorch, eager, fused AdamW, bf16 autocast (fp32 master weights)
  ds:    DeepSpeed ZeRO-1 or ZeRO-2 from a hand-written config, the one deepyard derives
         from jobs/examples/gpt2_small.yaml (train/engine.py): bf16, gradient clipping
         1.0, torch AdamW as a client optimizer, the same warmup + cosine schedule

Both train `deepyard.models.gpt.GPT` on the corpus's token rows (the job's tokenizer and
max_length, so every row is full), read in file order, micro-batch after micro-batch,
with the token ids in pinned host memory copied per step. Gradient clipping at 1.0 in
both (the spec's default `optimizer.grad_clip`). No host sync inside the timed window:
the loss stays on the device; the window is the steps after `--warmup`, between two
device synchronisations. Prints one JSON line (and writes it to `--json-out`).

Run by gpt2_check.py, one process per loop:
  python bench/gpu/bare.py --loop ds --zero-stage 2 --corpus DIR --device cuda ...
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import math
import os
import time
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import torch
import torch.nn.functional as F

from deepyard.data.text import encode, load_tokenizer, pad_batch, pad_id
from deepyard.models.gpt import GPT, PRESETS, GPTShape
from deepyard.models.registry import Vocab

# jobs/examples/gpt2_small.yaml's optimizer, written out (not read from deepyard's spec).
LR, BETAS, WEIGHT_DECAY, WARMUP, MIN_LR_RATIO, GRAD_CLIP = 6e-4, (0.9, 0.95), 0.1, 100, 0.1, 1.0


class TokenizerAt:
    """data.tokenizer of the check's job: the corpus's tokenizer.json at max_length."""

    package: str | None = None

    def __init__(self, path: Path, max_length: int) -> None:
        self.path: str | None = str(path)
        self.max_length = max_length


def vocab(corpus: Path, max_length: int) -> tuple[Any, Vocab]:
    """The job's tokenizer (the corpus's tokenizer.json at max_length) and its vocabulary."""
    tokenizer = load_tokenizer(TokenizerAt(corpus / "tokenizer.json", max_length))
    return tokenizer, Vocab(tokenizer.get_vocab_size(), pad_id(tokenizer))


def token_rows(corpus: Path, max_length: int) -> tuple[torch.Tensor, Vocab]:
    """The training split's rows as the job reads them: ids (N, L) int64, and the vocabulary."""
    tokenizer, words = vocab(corpus, max_length)
    texts = pq.read_table(corpus / "train.parquet", columns=["text"]).column("text").to_pylist()
    ids, _ = pad_batch(list(encode(tokenizer, texts)), words.pad_id)
    return ids, words


def gpt(size: str, seq: int, words: Vocab) -> GPT:
    """The job's model: deepyard's GPT at a size preset, `seq` positions, no dropout."""
    shape = PRESETS[size]
    return GPT(words, GPTShape(shape.n_layer, shape.n_head, shape.d_model, seq), 0.0)


def lr_factor(step: int, total: int) -> float:
    """Warmup, then cosine down to MIN_LR_RATIO (the job's schedule)."""
    if step < WARMUP:
        return (step + 1) / WARMUP
    progress = min(1.0, (step - WARMUP) / max(1, total - WARMUP))
    return MIN_LR_RATIO + (1.0 - MIN_LR_RATIO) * 0.5 * (1.0 + math.cos(math.pi * progress))


def ds_config(stage: int, micro_batch: int, bf16: bool) -> dict[str, Any]:
    """What deepyard's engine.deepspeed_config gives for the job, by hand."""
    config: dict[str, Any] = {
        "train_micro_batch_size_per_gpu": micro_batch,
        "gradient_accumulation_steps": 1,
        "train_batch_size": micro_batch,
        "zero_optimization": {"stage": stage},
        "zero_allow_untested_optimizer": True,
        "zero_force_ds_cpu_optimizer": False,
        "steps_per_print": 2**31 - 1,
        "wall_clock_breakdown": False,
        "gradient_clipping": GRAD_CLIP,
    }
    if bf16:
        config["bf16"] = {"enabled": True}
    return config


def next_token_loss(logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]).float(), ids[:, 1:].reshape(-1)
    )


def init_deepspeed(device: torch.device) -> Any:
    """A one-process group for DeepSpeed (NCCL on GPU, gloo on CPU)."""
    os.environ.setdefault("DS_ACCELERATOR", "cuda" if device.type == "cuda" else "cpu")
    for key, value in (("RANK", "0"), ("LOCAL_RANK", "0"), ("WORLD_SIZE", "1")):
        os.environ.setdefault(key, value)
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", str(29500 + os.getpid() % 1000))
    import deepspeed

    if device.type == "cpu":  # skip the shared-memory op's compile (inference only)
        ds_comm = importlib.import_module("deepspeed.comm.torch")
        ds_comm.build_shm_op = lambda: None  # type: ignore[attr-defined]
    deepspeed.init_distributed(dist_backend="nccl" if device.type == "cuda" else "gloo")
    return deepspeed


def build(args: argparse.Namespace, model: GPT, device: torch.device) -> tuple[Any, Any]:
    """(train_step(ids) → loss tensor, what to report about the set-up)."""
    bf16 = args.precision == "bf16"
    if args.loop == "torch":
        model.to(device)
        optimizer = torch.optim.AdamW(
            model.parameters(), lr=LR, betas=BETAS, weight_decay=WEIGHT_DECAY, fused=True
        )
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, args.steps))
        autocast = (
            torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
        )

        def torch_step(ids: torch.Tensor) -> torch.Tensor:
            with autocast:
                loss = next_token_loss(model(ids), ids)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
            return loss.detach()

        return torch_step, {"optimizer": "torch AdamW fused", "autocast": bf16}

    deepspeed = init_deepspeed(device)
    config = ds_config(args.zero_stage, args.micro_batch, bf16)
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR, betas=BETAS, weight_decay=WEIGHT_DECAY)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, args.steps))
    engine, _, _, _ = deepspeed.initialize(
        model=model, optimizer=optimizer, lr_scheduler=schedule, config=config
    )

    def ds_step(ids: torch.Tensor) -> torch.Tensor:
        loss = next_token_loss(engine(ids), ids)
        engine.backward(loss)
        engine.step()
        return loss.detach()

    return ds_step, {"optimizer": "torch AdamW (client)", "deepspeed_config": config}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run(args: argparse.Namespace) -> dict[str, Any]:
    device = torch.device(args.device)
    if device.type == "cuda":
        if device.index is None:  # set_device refuses a device without an index
            device = torch.device("cuda", 0)
        torch.cuda.set_device(device)
    else:
        torch.set_num_threads(args.threads)
    rows, words = token_rows(args.corpus, args.seq)
    need = args.steps * args.micro_batch
    if rows.shape[0] < need:
        raise SystemExit(f"{args.corpus} has {rows.shape[0]} training rows; {need} needed")
    rows = rows[:need].pin_memory() if device.type == "cuda" else rows[:need]
    torch.manual_seed(args.seed)
    model = gpt(args.size, args.seq, words)
    step, setup = build(args, model, device)
    total = torch.zeros((), device=device)
    started = time.perf_counter()
    for index in range(args.steps):
        if index == args.warmup:
            sync(device)
            started = time.perf_counter()
        batch = rows[index * args.micro_batch : (index + 1) * args.micro_batch]
        total += step(batch.to(device, non_blocking=True))
    sync(device)
    elapsed = time.perf_counter() - started
    timed = args.steps - args.warmup
    tokens_per_step = int((rows[: args.micro_batch] != words.pad_id).sum())  # full rows
    return {
        "loop": args.loop,
        "zero_stage": args.zero_stage if args.loop == "ds" else None,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "precision": args.precision,
        "steps": args.steps,
        "warmup_steps": args.warmup,
        "timed_steps": timed,
        "timed_s": round(elapsed, 4),
        "ms_per_step": round(1000 * elapsed / timed, 3),
        "tokens_per_step": tokens_per_step,
        "tokens_per_s": round(tokens_per_step * timed / elapsed, 2),
        "flops_per_token": model.flops_per_token(args.seq),
        "num_parameters": sum(p.numel() for p in model.parameters()),
        "mean_loss": round(float(total) / args.steps, 4),
        "max_memory_bytes": torch.cuda.max_memory_allocated(device)
        if device.type == "cuda"
        else None,
        **setup,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--loop", choices=("torch", "ds"), required=True)
    parser.add_argument("--zero-stage", type=int, default=1)
    parser.add_argument("--corpus", type=Path, required=True)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--precision", choices=("bf16", "fp32"), default="bf16")
    parser.add_argument("--size", default="small", help="deepyard.models.gpt preset")
    parser.add_argument("--seq", type=int, default=1024)
    parser.add_argument("--micro-batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2, help="torch threads on CPU")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args(argv)
    if not 0 < args.warmup < args.steps:
        parser.error("--warmup must be at least 1 and below --steps")
    result = run(args)
    line = json.dumps(result)
    if args.json_out:
        args.json_out.write_text(line + "\n")
    print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
