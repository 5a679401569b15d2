"""A small Transformer encoder text classifier trained from scratch: token + learned
position embeddings, pre-norm encoder layers that ignore padding, masked mean pooling."""

from __future__ import annotations

import torch
from torch import nn

from deepyard.models import checks
from deepyard.models.pooling import masked_mean
from deepyard.models.registry import Vocab, register


class TransformerClassifier(nn.Module):
    def __init__(
        self,
        vocab: Vocab,
        num_classes: int,
        max_length: int,
        dim: int,
        heads: int,
        layers: int,
        ff_dim: int,
        dropout: float,
    ) -> None:
        super().__init__()
        self.pad_id = vocab.pad_id
        self.embed = nn.Embedding(vocab.size, dim, padding_idx=vocab.pad_id)
        self.position = nn.Embedding(max_length, dim)
        layer = nn.TransformerEncoderLayer(
            dim, heads, ff_dim, dropout, activation="gelu", batch_first=True, norm_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        mask = ids != self.pad_id
        positions = torch.arange(ids.shape[1], device=ids.device)
        x = self.dropout(self.embed(ids) + self.position(positions))
        x = self.norm(self.encoder(x, src_key_padding_mask=~mask))
        return self.head(self.dropout(masked_mean(x, mask)))


@register(
    "transformer",
    family="text",
    summary="Small Transformer encoder text classifier from scratch (pre-norm, mean pooling)",
    example_job="jobs/examples/rotten_tomatoes_transformer.yaml",
    inputs="tokens",
    default_input_shape=(64,),
    default_num_classes=2,
)
def build_transformer(
    input_shape: tuple[int, ...],
    num_classes: int,
    vocab: Vocab,
    dim: int = 128,
    heads: int = 4,
    layers: int = 2,
    ff_dim: int = 256,
    dropout: float = 0.1,
) -> nn.Module:
    """Rows up to data.tokenizer.max_length tokens (one learned position each)."""
    max_length = checks.token_input("transformer", input_shape)
    checks.positive("transformer", dim=dim, heads=heads, layers=layers, ff_dim=ff_dim)
    checks.divides("transformer", "dim", dim, "heads", heads)
    checks.dropout("transformer", dropout)
    return TransformerClassifier(
        vocab, num_classes, max_length, dim, heads, layers, ff_dim, dropout
    )
