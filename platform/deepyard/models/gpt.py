"""GPT-style causal language model (GPT-2 layout): token + learned position embeddings,
pre-LayerNorm blocks (causal self-attention through torch's scaled_dot_product_attention,
a 4x GELU MLP), a final LayerNorm and an LM head tied to the token embedding.

Its forward maps token ids (B, L) to next-token logits (B, L, vocab); the
`language-modeling` task (deepyard.tasks.language_modeling) shifts the targets and masks
padding. Rows are padded at their end, so causal attention alone keeps every real token
from seeing a pad: no padding mask is needed, and the fused attention kernels apply.

For pipeline parallelism `layers()` returns the network as an ordered sequence of
modules, each tensor in, tensor out: the embedding, every block, the final norm and the
head's projection. The projection's weight *is* the embedding's; deepyard's pipeline
builder (deepyard.train.pipeline) finds the shared weight and declares both as one
DeepSpeed `TiedLayerSpec`, so DeepSpeed all-reduces the tied gradient between the first
and last stage.

For tensor parallelism the GPT registers a plan (models/tensor_plans.py, at the end of
this file): qkv and the MLP's first Linear split by output, the two projections back
into the residual stream by input; the embeddings, norms and tied head stay whole.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from deepyard.models import checks, tensor_plans
from deepyard.models.registry import Vocab, register
from deepyard.models.tensor_plans import Split, TensorPlan


@dataclass(frozen=True)
class GPTShape:
    n_layer: int
    n_head: int
    d_model: int
    max_seq_len: int


DEFAULT_SIZE = "mini"
# `size` presets; n_layer, n_head, d_model and max_seq_len given beside one win over it.
PRESETS: dict[str, GPTShape] = {
    "tiny": GPTShape(n_layer=2, n_head=2, d_model=64, max_seq_len=128),
    "mini": GPTShape(n_layer=4, n_head=4, d_model=256, max_seq_len=256),
    "small": GPTShape(n_layer=12, n_head=12, d_model=768, max_seq_len=1024),  # GPT-2 small
    "medium": GPTShape(n_layer=24, n_head=16, d_model=1024, max_seq_len=1024),  # GPT-2 medium
}


class TokenEmbedding(nn.Module):
    """Token ids (B, L) → token + position embeddings (B, L, d_model)."""

    def __init__(self, vocab_size: int, max_seq_len: int, d_model: int, dropout: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(vocab_size, d_model))  # tied to the LM head
        self.position = nn.Embedding(max_seq_len, d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return _add_positions(F.embedding(ids, self.weight), self.position, self.dropout)


class TokenLookup(nn.Module):
    """The embedding's token lookup as a pipeline layer. It holds the weight tied to the
    LM head and nothing else: the first and last stage each keep a copy of what it holds
    (DeepSpeed's tied layers), and only the tied weight's gradients are summed between
    them; a position table in it would drift apart on the last stage."""

    def __init__(self, embed: TokenEmbedding) -> None:
        super().__init__()
        self.weight = embed.weight

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return F.embedding(ids, self.weight)


class AddPositions(nn.Module):
    """The embedding's position table (and dropout) as a pipeline layer."""

    def __init__(self, embed: TokenEmbedding) -> None:
        super().__init__()
        self.position, self.dropout = embed.position, embed.dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _add_positions(x, self.position, self.dropout)


def _add_positions(x: torch.Tensor, position: nn.Embedding, dropout: nn.Module) -> torch.Tensor:
    length = x.shape[1]
    if length > position.num_embeddings:
        raise ValueError(
            f"a row of {length} tokens is longer than the model's context "
            f"(model.args.max_seq_len={position.num_embeddings}); raise "
            f"max_seq_len or lower data.tokenizer.max_length to at most it"
        )
    positions = torch.arange(length, device=x.device)
    return dropout(x + position(positions))  # type: ignore[no-any-return]


class CausalSelfAttention(nn.Module):
    def __init__(self, d_model: int, n_head: int, dropout: float) -> None:
        super().__init__()
        self.head_dim, self.dropout = d_model // n_head, dropout
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)
        self.proj_dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Head counts come from qkv's output width: under tensor parallelism a rank's qkv
        # holds only its share of the heads (deepyard.train.tensor_parallel).
        batch, length = x.shape[:2]
        q, k, v = (
            part.view(batch, length, -1, self.head_dim).transpose(1, 2)
            for part in self.qkv(x).chunk(3, dim=2)
        )
        y = F.scaled_dot_product_attention(
            q, k, v, dropout_p=self.dropout if self.training else 0.0, is_causal=True
        )
        return self.proj_dropout(self.proj(y.transpose(1, 2).reshape(batch, length, -1)))


class Block(nn.Module):
    """Pre-LayerNorm transformer block: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, d_model: int, n_head: int, dropout: float) -> None:
        super().__init__()
        self.ln_attn = nn.LayerNorm(d_model)
        self.attn = CausalSelfAttention(d_model, n_head, dropout)
        self.ln_mlp = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(
            nn.Linear(d_model, 4 * d_model),
            nn.GELU(),
            nn.Linear(4 * d_model, d_model),
            nn.Dropout(dropout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_attn(x))
        return x + self.mlp(self.ln_mlp(x))


class LMHead(nn.Module):
    """Final LayerNorm, then logits over the vocabulary (weight tied to the embedding)."""

    def __init__(self, d_model: int, vocab_size: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(d_model)
        self.proj = nn.Linear(d_model, vocab_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.norm(x))


class GPT(nn.Module):
    def __init__(self, vocab: Vocab, shape: GPTShape, dropout: float) -> None:
        super().__init__()
        self.shape, self.vocab_size, self.pad_id = shape, vocab.size, vocab.pad_id
        d_model = shape.d_model
        self.embed = TokenEmbedding(vocab.size, shape.max_seq_len, d_model, dropout)
        self.blocks = nn.ModuleList(
            Block(d_model, shape.n_head, dropout) for _ in range(shape.n_layer)
        )
        self.head = LMHead(d_model, vocab.size)
        self.head.proj.weight = self.embed.weight  # one parameter, counted once
        self._init_weights()

    def _init_weights(self) -> None:
        for layer in self.layers()[:-1]:  # the head's projection is the embedding's weight
            self.init_layer(layer)

    def init_layer(self, layer: nn.Module) -> None:
        """GPT-2's initialisation of one of `layers()`: weights N(0, 0.02), biases 0,
        LayerNorms 1 and 0, the projections back into the residual stream N(0, 0.02 /
        sqrt(2 x n_layer)). Layer by layer, so that a pipeline stage initialises only its
        own (deepyard.models.layer_init)."""
        for module in layer.modules():
            if isinstance(module, nn.LayerNorm):
                module.reset_parameters()
            elif isinstance(module, nn.Linear | nn.Embedding | TokenLookup):
                nn.init.normal_(module.weight, std=0.02)
                bias = getattr(module, "bias", None)
                if isinstance(bias, torch.Tensor):
                    nn.init.zeros_(bias)
        residual_std = 0.02 / math.sqrt(2 * self.shape.n_layer)
        for name, parameter in layer.named_parameters():
            if name.endswith(("attn.proj.weight", "mlp.2.weight")):  # into the residual
                nn.init.normal_(parameter, std=residual_std)

    def layers(self) -> list[nn.Module]:
        """The network in order (token lookup, positions, blocks..., final norm, head
        projection): forward applies the same operations one after another; pipeline
        stages are cut from these units. The first and last share one weight
        (deepyard.train.pipeline ties them)."""
        return [
            TokenLookup(self.embed),
            AddPositions(self.embed),
            *self.blocks,
            self.head.norm,
            self.head.proj,
        ]

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.embed(ids)
        for block in self.blocks:
            x = block(x)
        return self.head(x)  # type: ignore[no-any-return]

    def flops_per_token(self, seq_len: int) -> float:
        """Forward FLOPs per token in rows of `seq_len` tokens, counted as PaLM and
        Megatron count them (matmuls only, 2 per multiply-add): per block 24 d^2 for the
        qkv, output and MLP projections, plus 4 seq d for the attention scores (QK^T) and
        the weighted values, over the whole row as dense kernels compute them; plus
        2 d vocab for the LM head. Embedding lookups, norms, biases and softmax are free."""
        d, n_layer = self.shape.d_model, self.shape.n_layer
        dense = n_layer * 24 * d * d + 2 * d * self.vocab_size
        attention = n_layer * 4 * seq_len * d
        return float(dense + attention)

    def flops_per_sample(self, input_shape: tuple[int, ...]) -> float:
        """Forward FLOPs of one full row of input_shape[0] tokens."""
        return input_shape[0] * self.flops_per_token(input_shape[0])


def resolve_shape(
    size: str,
    n_layer: int | None,
    n_head: int | None,
    d_model: int | None,
    max_seq_len: int | None,
) -> GPTShape:
    """The preset `size`, with any of the explicit arguments put over it."""
    if size not in PRESETS:
        raise ValueError(
            f"model.args.size={size!r} for model gpt is not a preset; use one of: "
            f"{', '.join(PRESETS)} (or set n_layer, n_head and d_model beside it)"
        )
    preset = PRESETS[size]
    return GPTShape(
        n_layer=preset.n_layer if n_layer is None else n_layer,
        n_head=preset.n_head if n_head is None else n_head,
        d_model=preset.d_model if d_model is None else d_model,
        max_seq_len=preset.max_seq_len if max_seq_len is None else max_seq_len,
    )


def check_shape(shape: GPTShape, rows: int) -> None:
    """Arguments that would fail deep inside torch, named with their fix."""
    checks.positive(
        "gpt",
        n_layer=shape.n_layer,
        n_head=shape.n_head,
        d_model=shape.d_model,
        max_seq_len=shape.max_seq_len,
    )
    checks.divides("gpt", "d_model", shape.d_model, "n_head", shape.n_head)
    if rows > shape.max_seq_len:
        raise ValueError(
            f"model.args.max_seq_len={shape.max_seq_len} for model gpt is shorter than the "
            f"rows the data gives (data.tokenizer.max_length={rows}); raise max_seq_len to "
            f"{rows} or more, or lower max_length to {shape.max_seq_len}"
        )


@register(
    "gpt",
    family="language-model",
    summary="GPT-style causal language model (GPT-2 layout, tied head; size presets)",
    example_job="jobs/examples/rotten_tomatoes_gpt.yaml",
    inputs="tokens",
    task="language-modeling",
    default_input_shape=(64,),
    default_num_classes=2,
    pipeline=True,
)
def build_gpt(
    input_shape: tuple[int, ...],
    num_classes: int,
    vocab: Vocab,
    size: str = DEFAULT_SIZE,
    n_layer: int | None = None,
    n_head: int | None = None,
    d_model: int | None = None,
    max_seq_len: int | None = None,
    dropout: float = 0.1,
) -> nn.Module:
    """`size` picks a preset (tiny, mini, small = GPT-2 small, medium = GPT-2 medium);
    the vocabulary is the job's tokenizer's (`num_classes` is not used: the targets are
    the next tokens)."""
    rows = checks.token_input("gpt", input_shape)
    shape = resolve_shape(size, n_layer, n_head, d_model, max_seq_len)
    check_shape(shape, rows)
    checks.dropout("gpt", dropout)
    return GPT(vocab, shape, dropout)


def tensor_widths(args: dict[str, Any]) -> dict[str, int]:
    """The widths tensor parallelism splits, for the job's model.args: whole heads per rank
    (qkv and the output projection), and the MLP's hidden units."""
    shape = resolve_shape(
        args.get("size", DEFAULT_SIZE),
        args.get("n_layer"),
        args.get("n_head"),
        args.get("d_model"),
        args.get("max_seq_len"),
    )
    return {
        "model.args.n_head": shape.n_head,
        "model.args.d_model": shape.d_model,
        "the MLP width (4 x model.args.d_model)": 4 * shape.d_model,
    }


# Megatron's layout: qkv and the MLP's first Linear split by output (qkv part by part, so
# each rank holds whole heads of q, k and v); the attention output projection and the
# MLP's second Linear split by input, summed over the group. The head stays whole: its
# weight is the token embedding, which every rank needs whole to look tokens up.
tensor_plans.register(
    "gpt",
    TensorPlan(
        splits=(
            Split(r"blocks\.\d+\.attn\.qkv\.weight", "column", parts=3),
            Split(r"blocks\.\d+\.attn\.proj\.weight", "row"),
            Split(r"blocks\.\d+\.mlp\.0\.weight", "column"),
            Split(r"blocks\.\d+\.mlp\.2\.weight", "row"),
        ),
        widths=tensor_widths,
    ),
)
