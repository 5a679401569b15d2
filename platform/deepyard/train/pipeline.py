"""Pipeline parallelism: a model's `layers()` cut into DeepSpeed `PipelineModule` stages.

A model opts in by returning its network as an ordered list of modules whose composition
is its forward (`GPT.layers()`; registered with `pipeline=True`). The builder here:
- wraps each layer for DeepSpeed; layers that share a parameter (a GPT's embedding and
  its tied LM head) become one `TiedLayerSpec`, so each stage holding one keeps a copy
  and DeepSpeed all-reduces the tied gradient between them;
- cuts the layers into `parallelism.pipeline` stages, balanced by parameter count, by
  layer count or by forward FLOPs (deepyard.train.pipeline_cut);
- computes the task's own loss on the last stage.

The model arrives built on the meta device (deepyard.models.layer_init): each rank gives
real tensors only to its stage's layers (and a copy of a tied layer it applies), each
layer initialised from its own seed, so the weights equal those of a one-process run
whatever the stage count, and no rank allocates the whole model.

A training step pulls all of the step's micro-batches on every rank (stages other than
the first and last do not read them, but pulling keeps every rank's data cursor in
step for checkpoints) and hands them to `engine.train_batch`, which runs DeepSpeed's
1F1B schedule. Evaluation streams several batches through each `engine.eval_batch` call
(`eval_stream`); only the last stage sees outputs, and scores each batch's.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import torch
from torch import nn

from deepyard.models import layer_init
from deepyard.tasks.base import StepResult, Task, count_tokens, to_device
from deepyard.train import stage_tensor
from deepyard.train.evaluate import pad_argument


class _Existing(nn.Module):
    """`LayerSpec` takes a module class to build; this one "builds" a module that exists
    already (the layer of the model built on this rank), so initial weights come from
    the model's own initialisation, not from a per-stage rebuild."""

    def __new__(cls, module: nn.Module) -> nn.Module:  # type: ignore[misc]
        return module


def build_module(
    model: nn.Module, spec: Any, task: Task, pad_id: int | None, input_shape: tuple[int, ...]
) -> nn.Module:
    """The DeepSpeed PipelineModule of this rank's stage of `model` (built on the meta
    device; this stage's layers are materialised here), with `task`'s loss. `input_shape`:
    one sample's (the data's), for the layers' FLOPs."""
    import torch.distributed as dist

    from deepyard.models.registry import get
    from deepyard.train import pipeline_cut

    layers: list[nn.Module] = model.layers()  # type: ignore[operator]
    specs = stage_specs(layers)
    num_stages, method = spec.parallelism.pipeline, spec.parallelism.pipeline_partition
    topology = stage_tensor.topology(num_stages, spec.parallelism.tensor, dist.get_world_size())
    tokens = get(spec.model.name).inputs == "tokens"
    flops = pipeline_cut.counted_flops(spec.model.name, layers, input_shape, tokens, method)
    bounds = pipeline_cut.cut(specs, flops, num_stages, method)
    stage = topology.get_coord(dist.get_rank()).pipe
    own = range(bounds[stage], bounds[stage + 1])
    layer_init.materialise(model, own, spec.training.seed, layers=layers)

    def loss(outputs: torch.Tensor, targets: tuple[torch.Tensor, torch.Tensor]) -> Any:
        inputs, labels = targets
        return task.loss(outputs, inputs, labels, **pad_argument(pad_id))

    printed = io.StringIO()  # DeepSpeed prints its stage table; `stages` reports it
    # no_grad: DeepSpeed broadcasts the tied weights in place at construction, which
    # autograd would otherwise record into the weights' graph.
    with contextlib.redirect_stdout(printed), torch.no_grad():
        module = pipeline_cut.CutPipelineModule(
            bounds,
            flops,
            layers=specs,
            topology=topology,
            loss_fn=loss,
            dynamic_shape=True,  # token batches are padded per batch: lengths vary
        )
    logging.getLogger(__name__).debug("%s", printed.getvalue())
    if [int(b) for b in module.parts] != bounds:  # materialised other layers than it runs
        raise RuntimeError(f"DeepSpeed cut stages at {module.parts}, deepyard at {bounds}")
    if spec.parallelism.tensor > 1:  # this stage's Linears become shards (train.stage_tensor)
        stage_tensor.split_model(spec.model.name, model, module._grid.get_slice_parallel_group())
    return module


def stages(module: nn.Module, layers: list[nn.Module]) -> list[dict[str, Any]]:
    """Each stage's layers, parameters and share of the forward FLOPs (where they could
    be counted), as the run summary reports them."""
    from deepyard.train.pipeline_cut import flops_shares

    bounds = [int(b) for b in module.parts]  # type: ignore[union-attr]
    shares = flops_shares(bounds, getattr(module, "flops_per_layer", None))
    out = []
    for stage, (start, stop) in enumerate(itertools.pairwise(bounds)):
        kept = layers[start:stop]
        params = {id(p): stage_tensor.whole_numel(p) for layer in kept for p in layer.parameters()}
        out.append(
            {
                "layers": [start, stop],
                "kinds": [type(layer).__name__ for layer in kept],
                "parameters": sum(params.values()),
                **({} if shares is None else {"flops_share": round(shares[stage], 4)}),
            }
        )
    return out


def stage_specs(layers: list[nn.Module]) -> list[Any]:
    """The layers as DeepSpeed layer specs: plain modules, except layers that share a
    parameter with an earlier one, which become `TiedLayerSpec`s of that earlier layer."""
    from deepspeed.pipe import TiedLayerSpec

    tied = layer_init.ties(layers)
    specs: list[Any] = []
    for index, layer in enumerate(layers):
        first = tied.owner[index]
        if first not in tied.shared:
            specs.append(layer)
            continue
        attrs = tied.shared[first]
        key = f"tied_{first}"
        if first == index:
            specs.append(TiedLayerSpec(key, _Existing, layer, tied_weight_attr=attrs))
        else:  # applies its own module, whose shared weights are the first layer's
            forward = partial(_apply, layer)
            specs.append(
                TiedLayerSpec(
                    key, _Existing, layers[first], forward_fn=forward, tied_weight_attr=attrs
                )
            )
    return specs


def stage_names(model: nn.Module) -> dict[str, str]:
    """Each entry of the model's state (parameters and buffers, every name of a tied one)
    → its name in the PipelineModule that `build_module` makes of it: `<layer index>.<name
    in the layer>`, or `tied_modules.tied_<first user>.<name>` for a layer that shares
    weights. They do not depend on the stage count, so they carry a checkpoint across
    layouts."""
    layers: list[nn.Module] = model.layers()  # type: ignore[operator]
    tied = layer_init.ties(layers)
    whole: dict[int, list[str]] = defaultdict(list)
    for name, tensor in model.state_dict(keep_vars=True).items():
        whole[id(tensor)].append(name)
    names: dict[str, str] = {}
    for index, layer in enumerate(layers):
        first = tied.owner[index]
        if first != index:
            continue  # a later user: its module is the first user's
        prefix = f"tied_modules.tied_{first}" if first in tied.shared else str(index)
        for local, tensor in layer.state_dict(keep_vars=True).items():
            for name in whole[id(tensor)]:
                names.setdefault(name, f"{prefix}.{local}")
    return names


def _apply(layer: nn.Module, _tied: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return layer(x)  # type: ignore[no-any-return]


def is_pipeline(engine: Any) -> bool:
    return bool(getattr(engine, "is_pipe_parallel", False))


def train_step(
    engine: Any,
    next_batch: Callable[[], tuple[torch.Tensor, torch.Tensor]],
    accumulation: int,
    device: torch.device,
    dtype: torch.dtype,
    pad_id: int | None,
) -> StepResult:
    """One optimizer step of the pipeline over `accumulation` micro-batches."""
    started = time.perf_counter()
    micro = []
    tokens = 0
    for _ in range(accumulation):
        inputs, labels = next_batch()
        inputs = to_device(inputs, device, dtype)
        tokens += count_tokens(inputs, pad_id)
        micro.append((inputs, (inputs, labels.to(device))))
    loss = engine.train_batch(iter(micro))
    # Forward and backward interleave in the 1F1B schedule: the step is the finest time.
    return StepResult(float(loss), tokens, time.perf_counter() - started)


# Micro-batches per `eval_batch` call, per stage: a call fills and drains the pipeline,
# so M micro-batches keep the stages busy M / (M + P - 1) of the time (8 x P: over 8/9).
EVAL_MICRO_BATCHES_PER_STAGE = 8


def eval_stream(
    engine: Any,
    batches: Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
    score: Callable[[Any, torch.Tensor, torch.Tensor, torch.Tensor], None],
) -> None:
    """Evaluates (inputs, labels, row mask) batches, several micro-batches per
    `eval_batch` call (the training's gradient_accumulation, or 8 per stage if more; the
    last call shorter); the last stage calls `score(outputs, inputs, labels, mask)` for
    each micro-batch as its outputs come out. Every rank of the replica pulls the same
    batches; every replica must make as many calls (DeepSpeed starts each with a barrier
    over all ranks): the eval shards have equal lengths."""
    per_call = max(engine.micro_batches, EVAL_MICRO_BATCHES_PER_STAGE * engine.num_stages)
    module = engine.module
    training_loss = module.loss_fn

    def scored(outputs: Any, targets: tuple[torch.Tensor, ...]) -> torch.Tensor:
        score(outputs, *targets)
        return torch.zeros((), device=targets[0].device)  # what DeepSpeed adds up

    module.loss_fn = scored  # the last stage's loss_fn sees each micro-batch's outputs
    try:
        while chunk := list(itertools.islice(batches, per_call)):
            micro = ((inputs, (inputs, labels, mask)) for inputs, labels, mask in chunk)
            engine.eval_batch(
                micro,
                compute_loss=True,  # through `scored`
                reduce_output=None,  # no mean over micro-batches and replicas
                bcast_loss=False,
                num_micro_batches=len(chunk),
            )
    finally:
        module.loss_fn = training_loss
