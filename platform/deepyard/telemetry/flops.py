"""Model FLOPs for throughput in FLOP/s and MFU.

Forward FLOPs per sample are counted by torch's `FlopCounterMode` on a two-sample batch
of the model as built: exact for matmuls and convolutions (the operations that dominate),
and nothing for element-wise ones, the convention of MFU (PaLM, Megatron). Training
counts three forward passes per sample (the backward pass costs about two). Models may
instead give an analytic count with a `flops_per_sample(input_shape)` method, which wins.

The count runs through the same ATen operations on every device (`countable()`): a real
model on CPU would otherwise take fused kernels the counter has no formula for (the
inference fast path of `nn.TransformerEncoderLayer` and `nn.MultiheadAttention` under
no_grad in eval mode, and the CPU flash-attention kernel of scaled_dot_product_attention),
and count next to nothing, while the same model on the meta device (pipeline stages)
counts every matmul: MFU would depend on the layout.

Language models count per token instead (`flops_per_token(seq_len)`, at the context the
job trains with): their rows are padded per batch, so a sample's cost varies, and the
model FLOP/s are the FLOPs per token times the real (non-pad) tokens per second, the
convention MFU is defined with (PaLM, appendix B).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported where FLOPs are counted, not where they are reported
    import torch
    from torch import nn

TRAIN_FACTOR = 3.0  # forward + backward (≈ 2 x forward)

# Dense peak FLOP/s per device by (device name fragment, precision); the first match wins.
PEAK_FLOPS: tuple[tuple[str, str, float], ...] = (
    ("H200", "bf16", 989e12),
    ("H200", "fp16", 989e12),
    ("H200", "fp32", 494e12),  # TF32 tensor cores
    ("H100", "bf16", 989e12),
    ("H100", "fp16", 989e12),
    ("H100", "fp32", 494e12),
    ("A100", "bf16", 312e12),
    ("A100", "fp16", 312e12),
    ("A100", "fp32", 156e12),
    ("L40S", "bf16", 362e12),
    ("L4", "bf16", 121e12),
    ("A10", "bf16", 125e12),
    ("V100", "fp16", 125e12),
    ("V100", "fp32", 15.7e12),
)


@contextmanager
def countable() -> Iterator[None]:
    """Every matmul visible to `FlopCounterMode`: no fused transformer fast path (a
    process-wide switch, restored on exit) and attention by the math backend, whose two
    batched matmuls the counter counts; same numbers as the fused kernels compute."""
    import torch
    from torch.nn.attention import SDPBackend, sdpa_kernel

    fast_path = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with sdpa_kernel(SDPBackend.MATH):
            yield
    finally:
        torch.backends.mha.set_fastpath_enabled(fast_path)


def forward_flops_per_sample(
    model: nn.Module, input_shape: tuple[int, ...], token_inputs: bool
) -> float:
    """FLOPs of one sample's forward pass (the model is left as it was found)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    analytic = getattr(model, "flops_per_sample", None)
    if callable(analytic):
        return float(analytic(input_shape))
    was_training = model.training
    model.eval()  # no dropout draws, no batch-norm statistics updated
    # A model cut into pipeline stages is counted on the meta device, as it was built.
    device = next(model.parameters()).device
    if token_inputs:
        batch = torch.ones((2, *input_shape), dtype=torch.long, device=device)
    else:
        batch = torch.zeros((2, *input_shape), device=device)
    counter = FlopCounterMode(display=False)
    try:
        with torch.no_grad(), countable(), counter:
            model(batch)
    finally:
        model.train(was_training)
    return counter.get_total_flops() / 2


def forward_flops_per_token(model: nn.Module, input_shape: tuple[int, ...]) -> float | None:
    """A language model's forward FLOPs per token at the longest row the data gives
    (input_shape[0], data.tokenizer.max_length); None for a model without that count."""
    analytic = getattr(model, "flops_per_token", None)
    return float(analytic(input_shape[0])) if callable(analytic) else None


def achieved_flops_per_s(
    flops_per_sample: float | None,
    flops_per_token: float | None,
    samples_per_s: float | None,
    tokens_per_s: float | None,
) -> float | None:
    """Model FLOP/s of training: per token where the model counts per token (and tokens
    were counted), else per sample; None when neither is known."""
    if flops_per_token and tokens_per_s:
        return TRAIN_FACTOR * flops_per_token * tokens_per_s
    if flops_per_sample and samples_per_s:
        return TRAIN_FACTOR * flops_per_sample * samples_per_s
    return None


def peak_flops_per_device(
    device: torch.device, precision: str, override: float | None
) -> float | None:
    """Peak FLOP/s of one device; None on CPU or an unknown device (MFU stays unset)."""
    if override is not None:
        return override
    if device.type != "cuda":
        return None
    import torch

    name = torch.cuda.get_device_name(device)
    for fragment, dtype, peak in PEAK_FLOPS:
        if fragment in name and dtype == precision:
            return peak
    return None


def device_stats(device: torch.device) -> dict[str, float]:
    """GPU utilisation and memory in use (NVML through torch); {} on CPU or without NVML."""
    if device.type != "cuda":
        return {}
    import torch

    try:
        return {
            "gpu_utilization": torch.cuda.utilization(device) / 100.0,
            "gpu_memory_bytes": float(torch.cuda.device_memory_used(device)),
        }
    except Exception:  # no NVML (nvidia-ml-py missing), or a driver that refuses
        return {}
