"""The whole model's weights from a checkpoint of a model split over ranks.

A pipeline checkpoint holds one file per layer (`layer_NN-model_states.pt`, written by the
stage that runs it; a tied layer's weights are in its first use); a tensor-parallel one
holds one module file per tensor rank (`mp_rank_NN_model_states.pt`), each with its slice
of the split weights; a pipeline with tensor slices one file per layer and tensor rank
(`layer_NN-model_TT-model_states.pt`). All are joined back under the whole model's
parameter names, so `deepyard eval` and `deepyard checkpoint export` read them like any
other checkpoint.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import torch

from deepyard.errors import CheckpointError


def split_model_state(folder: Path, manifest: dict[str, Any]) -> dict[str, torch.Tensor] | None:
    """The whole model's state from `folder` (one checkpoint tag); None when the model was
    not split over ranks (data parallelism: the usual consolidation applies)."""
    layout = manifest.get("parallelism") or {}
    model = manifest.get("spec", {}).get("model", {})
    tensor = layout.get("tensor", 1)
    if layout.get("pipeline", 1) > 1 and tensor == 1:
        return _from_layers(folder, manifest)
    if tensor > 1:
        from deepyard.train.tensor_parallel import merge_shards

        if layout.get("pipeline", 1) > 1:  # layer files per tensor rank (train.stage_tensor)
            shards = [_from_layers(folder, manifest, f"-model_{r:02d}") for r in range(tensor)]
        else:
            shards = [
                _load(folder / f"mp_rank_{rank:02d}_model_states.pt")["module"]
                for rank in range(tensor)
            ]
        return merge_shards(model.get("name", ""), shards)
    return None


def _from_layers(
    folder: Path, manifest: dict[str, Any], tensor_rank: str = ""
) -> dict[str, torch.Tensor]:
    """Each layer file's entries, renamed to the whole model's names: the model is built
    on the meta device, and each layer's tensors are found among the model's own. With
    tensor slices too, `tensor_rank` ("-model_01") picks that rank's layer files."""
    from deepyard.checkpoint.relayout import check_layers

    model = meta_model(manifest)
    check_layers(manifest, len(model.layers()))  # type: ignore[operator]
    names: dict[int, list[str]] = defaultdict(list)  # a tied weight has two names
    for name, tensor in model.state_dict(keep_vars=True).items():
        names[id(tensor)].append(name)
    state: dict[str, torch.Tensor] = {}
    for index, layer in enumerate(model.layers()):  # type: ignore[operator]
        path = folder / f"layer_{index:02d}{tensor_rank}-model_states.pt"
        if not path.exists():  # a later use of a tied layer, saved with its first
            continue
        own = layer.state_dict(keep_vars=True)
        for key, value in _load(path).items():
            for name in names[id(own[key])]:
                state[name] = value
    missing = sorted(set(model.state_dict()) - set(state))
    if missing:
        raise CheckpointError(
            f"{folder}: the pipeline checkpoint holds no weights for {', '.join(missing[:5])}"
        )
    return state


def meta_model(manifest: dict[str, Any]) -> torch.nn.Module:
    """The checkpoint's model on the meta device: its names and shapes, no memory."""
    from deepyard import models
    from deepyard.models.layer_init import build_on_meta

    spec, data = manifest.get("spec", {}), manifest.get("model_data") or {}
    vocab = models.Vocab(*data["vocab"]) if data.get("vocab") else None
    return build_on_meta(
        spec["model"]["name"],
        spec["model"].get("args", {}),
        tuple(data["input_shape"]),
        data["num_classes"],
        vocab,
    )


def _load(path: Path) -> Any:
    if not path.exists():
        raise CheckpointError(f"{path} is missing from the checkpoint")
    return torch.load(path, map_location="cpu", weights_only=False)
