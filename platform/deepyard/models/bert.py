"""A BERT encoder that loads Hugging Face `BertModel` checkpoints (`model.safetensors`,
names mapped by HF_NAMES) with torch + safetensors alone: no transformers needed."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class BertConfig:
    """The fields of a Hugging Face BERT config.json that shape the weights."""

    vocab_size: int = 30522
    hidden_size: int = 384
    num_hidden_layers: int = 6
    num_attention_heads: int = 12
    intermediate_size: int = 1536
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1


# Hugging Face BertModel parameter names → ours, applied in order to each key.
HF_NAMES = [
    ("embeddings.word_embeddings.", "word_embeddings."),
    ("embeddings.position_embeddings.", "position_embeddings."),
    ("embeddings.token_type_embeddings.", "token_type_embeddings."),
    ("embeddings.LayerNorm.", "embed_norm."),
    ("encoder.layer.", "layers."),
    (".attention.self.", ".attention."),
    (".attention.output.dense.", ".attention_out."),
    (".attention.output.LayerNorm.", ".attention_norm."),
    (".intermediate.dense.", ".ff_in."),
    (".output.dense.", ".ff_out."),
    (".output.LayerNorm.", ".ff_norm."),
]


class SelfAttention(nn.Module):
    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.query, self.key, self.value = (
            nn.Linear(dim, dim),
            nn.Linear(dim, dim),
            nn.Linear(dim, dim),
        )

    def forward(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """x (B, L, D); keep (B, 1, 1, L) true at real tokens."""
        b, n, d = x.shape
        q, k, v = (
            proj(x).view(b, n, self.heads, -1).transpose(1, 2)
            for proj in (self.query, self.key, self.value)
        )
        dropout = self.dropout if self.training else 0.0
        context = F.scaled_dot_product_attention(q, k, v, attn_mask=keep, dropout_p=dropout)
        return context.transpose(1, 2).reshape(b, n, d)


class BertLayer(nn.Module):
    """Post-norm: attention, add & norm, GELU feed-forward, add & norm."""

    def __init__(self, c: BertConfig) -> None:
        super().__init__()
        d, eps = c.hidden_size, c.layer_norm_eps
        self.attention = SelfAttention(d, c.num_attention_heads, c.attention_probs_dropout_prob)
        self.attention_out = nn.Linear(d, d)
        self.attention_norm = nn.LayerNorm(d, eps=eps)
        self.ff_in = nn.Linear(d, c.intermediate_size)
        self.ff_out = nn.Linear(c.intermediate_size, d)
        self.ff_norm = nn.LayerNorm(d, eps=eps)
        self.dropout = nn.Dropout(c.hidden_dropout_prob)

    def forward(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        x = self.attention_norm(x + self.dropout(self.attention_out(self.attention(x, keep))))
        return self.ff_norm(x + self.dropout(self.ff_out(F.gelu(self.ff_in(x)))))


class BertEncoder(nn.Module):
    """Token ids (B, L) and a mask of real tokens → hidden states (B, L, D)."""

    def __init__(self, c: BertConfig) -> None:
        super().__init__()
        d = c.hidden_size
        self.width = d
        self.word_embeddings = nn.Embedding(c.vocab_size, d)
        self.position_embeddings = nn.Embedding(c.max_position_embeddings, d)
        self.token_type_embeddings = nn.Embedding(c.type_vocab_size, d)
        self.embed_norm = nn.LayerNorm(d, eps=c.layer_norm_eps)
        self.embed_dropout = nn.Dropout(c.hidden_dropout_prob)
        self.layers = nn.ModuleList(BertLayer(c) for _ in range(c.num_hidden_layers))

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(ids.shape[1], device=ids.device)
        x = (
            self.word_embeddings(ids)
            + self.position_embeddings(positions)
            + self.token_type_embeddings(torch.zeros_like(ids))
        )
        x = self.embed_dropout(self.embed_norm(x))
        keep = mask[:, None, None, :]
        for layer in self.layers:
            x = layer(x, keep)
        return x

    def load_weights(self, path: str) -> None:
        """A Hugging Face BertModel `model.safetensors`: every encoder weight must be there
        and fit (the pooler and the position-id buffer are not used)."""
        from safetensors.torch import load_file

        weights = {
            _our_name(k): v
            for k, v in load_file(path).items()
            if not k.startswith("pooler.") and k != "embeddings.position_ids"
        }
        missing, unexpected = self.load_state_dict(weights, strict=False)
        if missing or unexpected:
            raise ValueError(
                f"{path} does not fit a BERT encoder: missing {missing[:3]}, unexpected "
                f"{unexpected[:3]}; use a Hugging Face BertModel checkpoint"
            )


def _our_name(key: str) -> str:
    for theirs, ours in HF_NAMES:
        key = key.replace(theirs, ours)
    return key
