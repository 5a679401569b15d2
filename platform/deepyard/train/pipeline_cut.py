"""Where a pipeline's layers are cut into stages, and a DeepSpeed PipelineModule that runs
exactly that cut. Data flow: the model's `layers()` (on the meta device) → per-layer
forward FLOPs and parameter counts → `cut` (`parallelism.pipeline_partition`) → the
stage bounds every rank computes alike → `CutPipelineModule` (deepyard.train.pipeline).

`pipeline_partition`:
- `parameters`: DeepSpeed's `partition_balanced` over each layer's trainable parameters
  (a GPT's tied vocabulary matrix counts at both ends, as both end stages hold it);
- `layers`: the same number of layers per stage (DeepSpeed's `partition_uniform`);
- `compute`: `partition_balanced` over each layer's forward FLOPs for one sample of the
  job's shape, counted by running the meta model's layers in sequence on a meta batch
  under torch's FlopCounterMode (the counter of deepyard.telemetry.flops: matmuls and
  convolutions; element-wise work, lookups and norms are free). A GPT's token lookup
  costs nothing and its head costs 2 x vocab x width per token; a CNN's early,
  high-resolution layers cost many FLOPs for few parameters.

The counts are integers from shapes alone and the balancer is deterministic, so every
rank cuts alike without talking to the others.
"""

from __future__ import annotations

import itertools
from typing import Any

import torch
from deepspeed.pipe import LayerSpec, PipelineModule
from deepspeed.runtime import utils as ds_utils
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from deepyard.errors import SpecError

SAMPLES = 2  # batch-norm layers in training mode need more than one value per channel


def layer_flops(
    layers: list[nn.Module], input_shape: tuple[int, ...], token_inputs: bool
) -> list[int]:
    """Each layer's forward FLOPs for one sample of `input_shape` (without the batch
    axis), counted on the meta device: no memory, no time. The layers must be on the
    meta device. Raises ValueError saying which layer could not be run there."""
    if token_inputs:
        x: Any = torch.ones((SAMPLES, *input_shape), dtype=torch.long, device="meta")
    else:
        x = torch.zeros((SAMPLES, *input_shape), device="meta")
    modes = [layer.training for layer in layers]
    counts = []
    try:
        with torch.no_grad():
            for index, layer in enumerate(layers):
                layer.eval()  # no dropout draws, no batch-norm statistics
                counter = FlopCounterMode(display=False)
                try:
                    with counter:
                        x = layer(x)
                except Exception as exc:  # an op without a meta kernel, a data-dependent one
                    raise ValueError(
                        f"layer {index} ({type(layer).__name__}) does not run on the meta "
                        f"device: {type(exc).__name__}: {str(exc).splitlines()[0]}"
                    ) from exc
                counts.append(counter.get_total_flops() // SAMPLES)
    finally:
        for layer, mode in zip(layers, modes, strict=True):
            layer.train(mode)
    if not any(counts):
        raise ValueError("its layers count no matrix multiplications or convolutions")
    return counts


def counted_flops(
    model_name: str,
    layers: list[nn.Module],
    input_shape: tuple[int, ...],
    token_inputs: bool,
    partition: str,
) -> list[int] | None:
    """`layer_flops`, or None where they cannot be counted (the run summary then shows no
    FLOPs shares); a SpecError when the job asked to cut by them."""
    try:
        return layer_flops(layers, input_shape, token_inputs)
    except ValueError as exc:
        if partition != "compute":
            return None
        raise SpecError(
            f"parallelism.pipeline_partition=compute: the forward FLOPs of model "
            f"{model_name!r} cannot be counted layer by layer on the meta device ({exc}); "
            "set pipeline_partition: parameters or layers"
        ) from None


def cut(specs: list[Any], flops: list[int] | None, num_stages: int, partition: str) -> list[int]:
    """Stage bounds [0, ..., len(specs)] for `partition` (the spec's
    parallelism.pipeline_partition); `flops` from `counted_flops` (needed for compute)."""
    if partition == "layers":
        return [int(b) for b in ds_utils.partition_uniform(len(specs), num_stages)]
    if partition == "parameters":
        modules = [s.build() if isinstance(s, LayerSpec) else s for s in specs]
        weights = [sum(p.numel() for p in m.parameters() if p.requires_grad) for m in modules]
    elif partition == "compute" and flops is not None:
        weights = flops
    else:
        raise ValueError(f"no pipeline partition {partition!r} with FLOPs {flops}")
    return [int(b) for b in ds_utils.partition_balanced(weights, num_stages)]


def flops_shares(bounds: list[int], flops: list[int] | None) -> list[float] | None:
    """Each stage's share of the model's forward FLOPs (None where they are not known)."""
    if flops is None:
        return None
    total = sum(flops)
    return [sum(flops[start:stop]) / total for start, stop in itertools.pairwise(bounds)]


class CutPipelineModule(PipelineModule):  # type: ignore[misc]
    """DeepSpeed's PipelineModule, cut at `bounds` (deepyard's `cut`) instead of by one of
    its `partition_method` names. DeepSpeed partitions inside its constructor
    (`_partition_layers`), so the bounds are set before it runs; each layer's FLOPs (or
    None) stay on the module for the run summary."""

    def __init__(self, bounds: list[int], flops: list[int] | None, **kwargs: Any) -> None:
        self.cut_bounds = list(bounds)
        self.flops_per_layer = flops
        super().__init__(**kwargs)

    def _partition_layers(self, method: str = "uniform") -> None:
        if len(self.cut_bounds) != self.num_stages + 1:
            raise ValueError(f"{self.num_stages} stages need {self.num_stages + 1} bounds")
        self.parts = list(self.cut_bounds)
        stage = self._topo.get_coord(self.global_rank).pipe
        self._set_bounds(start=self.parts[stage], stop=self.parts[stage + 1])
