"""Layer by layer: a model that pipeline stages cut (its `layers()`) is built on the meta
device, where it allocates nothing, and a rank gives real tensors only to the layers it
runs. Data flow: spec.model → `build_on_meta` on every rank → `materialise` of all layers
(one process, data or tensor parallelism) or of this rank's stage's
(deepyard.train.pipeline) → DeepSpeed engine.

Initial weights must not depend on which layers a rank holds, or a run cut into stages
would start from other weights than the same run in one process. So each layer is
initialised alone, from the CPU generator seeded by (the job's seed, the layer's index):
with the model's `init_layer(layer)` where it has one (the GPT's GPT-2 scheme), else
torch's default initialisation of each submodule. Layer i gets the same bits in every
layout. A layer that shares a weight with an earlier one (the GPT's head and its
embedding) is not initialised again: the weight is the earlier layer's, and one tensor
wherever it is held.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from deepyard.models.registry import Vocab, build

Fresh = dict[int, tuple[torch.Tensor, torch.Tensor]]


def build_on_meta(
    name: str,
    args: dict[str, object],
    input_shape: tuple[int, ...],
    num_classes: int,
    vocab: Vocab | None = None,
) -> nn.Module:
    """The model with every tensor on the meta device: its shapes, no memory."""
    with torch.device("meta"):
        return build(name, dict(args), input_shape, num_classes, vocab)


@dataclass(frozen=True)
class Ties:
    """Which layer of `layers()` holds each weight first. `owner[i]`: layer i itself, or
    the earlier layer whose weights it shares (all of them: a tied head); that layer
    initialises them, and pipeline stages tie the two (deepyard.train.pipeline).
    `shared[j]`: the names, in layer j, of its weights that later layers share."""

    owner: list[int]
    shared: dict[int, list[str]]


def ties(layers: list[nn.Module]) -> Ties:
    """The weights `layers` share, found by parameter identity."""
    first: dict[int, tuple[int, str]] = {}  # parameter id → (first layer, its name there)
    owner: list[int] = []
    shared: dict[int, set[str]] = {}
    for index, layer in enumerate(layers):
        held = [first.setdefault(id(p), (index, n)) for n, p in layer.named_parameters()]
        layers_held = {holder for holder, _ in held}
        if layers_held - {index} and len(layers_held) > 1:
            raise ValueError(
                f"layer {index} ({type(layer).__name__}) shares weights with layer "
                f"{min(layers_held - {index})} and also holds weights of its own or of "
                "another layer; a layer of `layers()` either shares all its weights with "
                "one earlier layer (a tied head) or none"
            )
        owner.append(min(layers_held) if layers_held else index)
        if owner[-1] != index:
            shared.setdefault(owner[-1], set()).update(name for _, name in held)
    return Ties(owner, {holder: sorted(names) for holder, names in shared.items()})


def layer_seed(seed: int, index: int) -> int:
    """The generator seed of layer `index` in a job seeded with `seed` (independent
    streams for every pair, through numpy's SeedSequence)."""
    state = np.random.SeedSequence([seed, index]).generate_state(1, dtype=np.uint64)
    return int(state[0])


def materialise(
    model: nn.Module,
    indices: Iterable[int],
    seed: int,
    device: str = "cpu",
    layers: list[nn.Module] | None = None,
) -> None:
    """Give layers `indices` of a meta-built `model` (and the earlier layers whose weights
    they share) real tensors on `device`, initialised per layer. Tensors outside these
    layers stay on the meta device. `layers`: the model's `layers()` the caller goes on
    with (a layer may be a wrapper made per call, holding one of the model's weights:
    both it and the model's own module get the real tensor)."""
    if layers is None:
        layers = model.layers()  # type: ignore[operator]
    owner = ties(layers).owner
    wanted = sorted(set(indices))
    if not all(t.is_meta for i in wanted for t in layers[i].parameters()):
        raise ValueError("materialise takes a model built on the meta device (build_on_meta)")
    initialised = sorted({owner[i] for i in wanted})
    fresh: Fresh = {}  # meta tensor id → it and its real tensor (ties kept)
    for index in sorted(set(wanted) | set(initialised)):
        _allocate(layers[index], device, fresh)
    _swap(model, fresh)  # the model's own modules holding what a wrapper layer holds
    init = getattr(model, "init_layer", reset_layer)
    for index in initialised:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(layer_seed(seed, index))
            with torch.no_grad():
                init(layers[index])
        _check_initialised(layers[index], index, type(model).__name__)


def materialise_all(model: nn.Module, seed: int, device: str = "cpu") -> nn.Module:
    """Every layer of a meta-built `model`, as `materialise` gives them; returns `model`."""
    materialise(model, range(len(model.layers())), seed, device)  # type: ignore[operator]
    left = [name for name, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if left:
        raise ValueError(
            f"model {type(model).__name__} holds {', '.join(left)} outside its layers(); "
            "layers() must hold every parameter and buffer of the model"
        )
    return model


def reset_layer(layer: nn.Module) -> None:
    """torch's default initialisation of every submodule of `layer`, each after the
    modules inside it (as construction runs: nn.MultiheadAttention resets its output
    projection's bias after the Linear's own reset)."""
    for module in reversed(list(layer.modules())):
        for reset in ("reset_parameters", "_reset_parameters"):
            method = getattr(module, reset, None)
            if callable(method):
                method()
                break


def _allocate(layer: nn.Module, device: str, fresh: Fresh) -> None:
    """Replace the meta parameters and buffers of `layer`'s modules with uninitialised real
    ones (floating point ones NaN, so that a tensor no initialisation writes is found)."""
    for module in layer.modules():
        tables: tuple[dict[str, Any], ...] = (module._parameters, module._buffers)
        for table in tables:
            for name, tensor in table.items():
                if tensor is None or not tensor.is_meta:
                    continue
                if id(tensor) not in fresh:
                    real = torch.empty_like(tensor, device=device)
                    real.fill_(float("nan") if real.is_floating_point() else 0)
                    if isinstance(tensor, nn.Parameter):
                        real = nn.Parameter(real, requires_grad=tensor.requires_grad)
                    fresh[id(tensor)] = (tensor, real)  # the meta one kept: ids stay unique
                table[name] = fresh[id(tensor)][1]


def _swap(model: nn.Module, fresh: Fresh) -> None:
    """Every table entry of `model` that holds an allocated meta tensor gets its real one."""
    for module in model.modules():
        tables: tuple[dict[str, Any], ...] = (module._parameters, module._buffers)
        for table in tables:
            for name, tensor in table.items():
                if tensor is not None and fresh.get(id(tensor), (None,))[0] is tensor:
                    table[name] = fresh[id(tensor)][1]


def _check_initialised(layer: nn.Module, index: int, model: str) -> None:
    tensors = [*layer.named_parameters(), *layer.named_buffers()]
    for name, tensor in tensors:
        if tensor.is_floating_point() and torch.isnan(tensor.sum()):
            raise ValueError(
                f"model {model}: layer {index} ({type(layer).__name__}) leaves {name!r} "
                "uninitialised when built layer by layer (neither its init_layer(layer) nor "
                "a reset_parameters() writes it); make the model's init_layer initialise it"
            )
