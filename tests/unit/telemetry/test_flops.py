"""Model FLOPs per sample, the numerator of MFU: the same count for a model whether it was
built with real weights on CPU (one process, data or tensor parallelism) or on the meta
device (pipeline stages), and close to 2 x weights x tokens for the token models."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from deepyard import models
from deepyard.models import layer_init, registry
from deepyard.telemetry.flops import forward_flops_per_sample


def build(name: str, meta: bool) -> tuple[nn.Module, tuple[int, ...], bool]:
    """The registered model at its `deepyard models list` shape, without loading
    pretrained weights where that is an argument (the count does not depend on them)."""
    entry = models.get(name)
    tokens = entry.inputs == "tokens"
    vocab = registry.MINILM_VOCAB if tokens else None
    args: dict[str, object] = {"pretrained": False} if "pretrained" in entry.arg_names() else {}
    shape, classes = entry.default_input_shape, entry.default_num_classes
    try:
        if meta:
            model = layer_init.build_on_meta(name, args, shape, classes, vocab)
        else:
            torch.manual_seed(0)
            model = models.build(name, args, shape, classes, vocab)
    except ValueError as error:
        if "is not installed" in str(error):
            pytest.skip(f"{name}: {error}")
        raise
    return model, shape, tokens


@pytest.mark.filterwarnings("ignore:for .*copying from a non-meta parameter")  # weights
@pytest.mark.parametrize("name", models.names())
def test_a_real_cpu_model_counts_what_the_same_model_on_meta_counts(name: str) -> None:
    """The transformer once counted 512 FLOPs on CPU (only its head: the encoder layers
    ran torch's fused inference fast path) against 37.7M on meta, and the MiniLM encoder
    missed its attention (CPU flash attention); MFU then depended on the layout."""
    real, shape, tokens = build(name, meta=False)
    meta, _, _ = build(name, meta=True)
    real.eval()  # a model under evaluation must not take a fast path either
    counted = forward_flops_per_sample(real, shape, tokens)
    assert counted > 0
    assert counted == forward_flops_per_sample(meta, shape, tokens)
    assert not real.training, "the model is left in the mode it was found in"
    assert torch.backends.mha.get_fastpath_enabled(), "torch's fast path is switched back on"


def matmul_weights(model: nn.Module) -> int:
    """Weights a token meets in a matmul: every matrix but embedding tables (a table tied
    to the output projection, as the GPT's, counts once)."""
    weights: dict[int, int] = {}
    for module in model.modules():
        if isinstance(module, nn.Embedding):
            continue
        for p in module.parameters(recurse=False):
            if p.dim() >= 2:
                weights[id(p)] = p.numel()
    return sum(weights.values())


TOKEN_MODELS = [n for n in models.names() if models.get(n).inputs == "tokens"]


@pytest.mark.parametrize("name", TOKEN_MODELS)
def test_a_token_model_counts_about_two_flops_per_weight_and_token(name: str) -> None:
    """The analytic estimate 2 x weights x tokens (Kaplan et al.; PaLM's 6N is the training
    cost); attention adds seq/(6 d) to it (12% for the transformer at 64 tokens, dim 128)
    and a per-row head slightly less than a per-token one."""
    model, shape, _ = build(name, meta=False)  # as one process trains it
    estimate = 2 * matmul_weights(model) * shape[0]
    counted = forward_flops_per_sample(model, shape, token_inputs=True)
    assert 0.95 * estimate <= counted <= 1.25 * estimate


def test_the_count_leaves_torchs_fast_path_as_it_was() -> None:
    """A process that switched the fast path off itself keeps it off; one with it on gets
    it back, also after a failing forward."""

    class Failing(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear = nn.Linear(4, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            raise RuntimeError("forward failed")

    torch.backends.mha.set_fastpath_enabled(False)
    try:
        forward_flops_per_sample(nn.Linear(4, 4), (4,), token_inputs=False)
        assert not torch.backends.mha.get_fastpath_enabled()
    finally:
        torch.backends.mha.set_fastpath_enabled(True)
    with pytest.raises(RuntimeError, match="forward failed"):
        forward_flops_per_sample(Failing(), (4,), token_inputs=False)
    assert torch.backends.mha.get_fastpath_enabled()
