"""Model builders by name. Data flow: spec.model → `build()` on every rank → DeepSpeed engine."""

from deepyard.models import cnn, mlp  # noqa: F401  (register the built-in families)
from deepyard.models.registry import ModelEntry, build, check, get, names, register

__all__ = ["ModelEntry", "build", "check", "get", "names", "register"]
