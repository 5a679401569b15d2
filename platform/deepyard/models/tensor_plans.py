"""Tensor-parallel plans by model name: which weights a model splits across the ranks of
one tensor-parallel group, and which of its widths must divide by the degree.

A model opts in by registering a plan beside its builder (models/gpt.py does); a model
without one trains with parallelism.tensor: 1 only. deepyard.train.tensor_parallel checks
a job's model against its plan when the spec is validated and turns the plan into
DeepSpeed AutoTP's `tensor_parallel.partition_config` before `deepspeed.initialize`.
Plans are plain data here (no DeepSpeed import), in Megatron's terms:

- a **column** split cuts a Linear's output features (its weight's rows and its bias):
  each rank computes a slice of the outputs from the whole input;
- a **row** split cuts its input features (the weight's columns): each rank multiplies
  its slice of the input, the partial outputs are summed over the group (all-reduce),
  and the bias, whole on every rank, is added once after the sum;
- a column weight that concatenates `parts` equal matrices (a fused q, k, v projection
  has parts=3) is split part by part: rank r takes the r-th slice of q, of k and of v,
  so it holds whole heads of each, not the first half of the concatenation.

Every parameter no split names (embeddings, norms, the biases of row splits, a tied LM
head) stays whole and identical on every rank of the group.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

Widths = Callable[[dict[str, Any]], dict[str, int]]


@dataclass(frozen=True)
class Split:
    """One kind of weight to split: `pattern` is a regular expression that must match a
    parameter's whole name (e.g. r"blocks\\.\\d+\\.mlp\\.0\\.weight"), as `re.fullmatch`."""

    pattern: str
    kind: Literal["column", "row"]
    parts: int = 1


@dataclass(frozen=True)
class TensorPlan:
    splits: tuple[Split, ...]
    # model.args → {"model.args.n_head": 12, ...}: widths that must divide by the degree,
    # in the order they are checked (the first that does not divide is reported).
    widths: Widths


_PLANS: dict[str, TensorPlan] = {}


def register(name: str, plan: TensorPlan) -> None:
    """Register the plan of model `name` (a registered model); a second one is an error."""
    if name in _PLANS:
        raise ValueError(f"a tensor-parallel plan for model {name!r} is registered twice")
    _PLANS[name] = plan


def get(name: str) -> TensorPlan | None:
    """The plan of model `name`, or None when the model does not support tensor parallelism."""
    return _PLANS.get(name)


def names() -> list[str]:
    """Models that support tensor parallelism."""
    return sorted(_PLANS)
