"""Model builders by name. Data flow: spec.model → `build()` on every rank → DeepSpeed engine."""

from deepyard.models import (  # noqa: F401  (register the built-in families)
    autoencoder,
    bert_finetune,
    cnn,
    efficientnet,
    forecaster,
    gan,
    gpt,
    inception,
    lstm,
    mlp,
    mobilenet,
    transformer,
)
from deepyard.models.registry import (
    ModelEntry,
    Vocab,
    build,
    check,
    get,
    names,
    num_parameters,
    register,
)

__all__ = [
    "ModelEntry",
    "Vocab",
    "build",
    "check",
    "get",
    "names",
    "num_parameters",
    "register",
]
