"""An LSTM text classifier trained from scratch: token embeddings, a (bidirectional) LSTM
over each row's real tokens (padding packed away), mean + max pooling, a linear head."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from deepyard.models import checks
from deepyard.models.pooling import masked_max, masked_mean
from deepyard.models.registry import Vocab, register


class LSTMClassifier(nn.Module):
    def __init__(
        self,
        vocab: Vocab,
        num_classes: int,
        embed_dim: int,
        hidden: int,
        layers: int,
        bidirectional: bool,
        dropout: float,
    ) -> None:
        super().__init__()
        self.pad_id = vocab.pad_id
        self.embed = nn.Embedding(vocab.size, embed_dim, padding_idx=vocab.pad_id)
        self.lstm = nn.LSTM(
            embed_dim,
            hidden,
            num_layers=layers,
            batch_first=True,
            bidirectional=bidirectional,
            dropout=dropout if layers > 1 else 0.0,
        )
        out = hidden * (2 if bidirectional else 1)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(2 * out, num_classes)

    def flops_per_sample(self, input_shape: tuple[int, ...]) -> float:
        """Forward FLOPs of a row of input_shape[0] tokens (the flop counter skips LSTMs)."""
        lstm, directions = self.lstm, 2 if self.lstm.bidirectional else 1
        per_token = 0.0
        for layer in range(lstm.num_layers):
            width = lstm.input_size if layer == 0 else lstm.hidden_size * directions
            per_token += directions * 2 * 4 * lstm.hidden_size * (width + lstm.hidden_size)
        return input_shape[0] * per_token + 2 * self.head.in_features * self.head.out_features

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        mask = ids != self.pad_id
        lengths = mask.sum(1).clamp(min=1).cpu()
        packed = pack_padded_sequence(
            self.dropout(self.embed(ids)), lengths, batch_first=True, enforce_sorted=False
        )
        hidden, _ = pad_packed_sequence(self.lstm(packed)[0], batch_first=True)
        mask = mask[:, : hidden.shape[1]]
        pooled = torch.cat([masked_mean(hidden, mask), masked_max(hidden, mask)], dim=1)
        return self.head(self.dropout(pooled))


@register(
    "lstm",
    family="text",
    summary="LSTM text classifier from scratch (bidirectional, mean + max pooling)",
    example_job="jobs/examples/rotten_tomatoes_lstm.yaml",
    inputs="tokens",
    default_input_shape=(64,),
    default_num_classes=2,
)
def build_lstm(
    input_shape: tuple[int, ...],
    num_classes: int,
    vocab: Vocab,
    embed_dim: int = 128,
    hidden: int = 128,
    layers: int = 1,
    bidirectional: bool = True,
    dropout: float = 0.3,
) -> nn.Module:
    checks.token_input("lstm", input_shape)
    checks.positive("lstm", embed_dim=embed_dim, hidden=hidden, layers=layers)
    checks.dropout("lstm", dropout)
    return LSTMClassifier(vocab, num_classes, embed_dim, hidden, layers, bidirectional, dropout)
