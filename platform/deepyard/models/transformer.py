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

    def layers(self) -> list[nn.Module]:
        """The network as a sequence for pipeline stages: the embedding, each encoder
        layer, then norm + pooling + head. Between layers flows (hidden, ids): the ids
        carry the padding to every stage (an integer tensor: no gradient to send back)."""
        return [
            _Embedding(self),
            *(_EncoderLayer(layer, self.pad_id) for layer in self.encoder.layers),
            _PooledHead(self),
        ]


Staged = tuple[torch.Tensor, torch.Tensor]  # (hidden states, token ids)


class _Embedding(nn.Module):
    def __init__(self, model: TransformerClassifier) -> None:
        super().__init__()
        self.embed, self.position, self.dropout = model.embed, model.position, model.dropout

    def forward(self, ids: torch.Tensor) -> Staged:
        positions = torch.arange(ids.shape[1], device=ids.device)
        return self.dropout(self.embed(ids) + self.position(positions)), ids


class _EncoderLayer(nn.Module):
    def __init__(self, layer: nn.Module, pad_id: int) -> None:
        super().__init__()
        self.layer, self.pad_id = layer, pad_id

    def forward(self, staged: Staged) -> Staged:
        x, ids = staged
        return self.layer(x, src_key_padding_mask=ids == self.pad_id), ids


class _PooledHead(nn.Module):
    def __init__(self, model: TransformerClassifier) -> None:
        super().__init__()
        self.norm, self.dropout, self.head = model.norm, model.dropout, model.head
        self.pad_id = model.pad_id

    def forward(self, staged: Staged) -> torch.Tensor:
        x, ids = staged
        pooled = masked_mean(self.norm(x), ids != self.pad_id)
        return self.head(self.dropout(pooled))  # type: ignore[no-any-return]


@register(
    "transformer",
    family="text",
    summary="Small Transformer encoder text classifier from scratch (pre-norm, mean pooling)",
    example_job="jobs/examples/rotten_tomatoes_transformer.yaml",
    inputs="tokens",
    default_input_shape=(64,),
    default_num_classes=2,
    pipeline=True,
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
