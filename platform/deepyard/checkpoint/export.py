"""Consolidated fp32 weights of a checkpoint, as safetensors, for use outside deepyard.

ZeRO-partitioned checkpoints are merged with DeepSpeed's own consolidation
(`zero_to_fp32`); unpartitioned ones (ZeRO-0) hold the whole module already; a model split
into pipeline stages or tensor slices is joined back by `split_export`.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import torch

from deepyard.checkpoint.manifest import Checkpoint
from deepyard.checkpoint.restore import local_copy
from deepyard.checkpoint.split_export import split_model_state
from deepyard.checkpoint.store import Store
from deepyard.errors import CheckpointError


def consolidated_state_dict(store: Store, checkpoint: Checkpoint) -> dict[str, torch.Tensor]:
    """The full fp32 model state of `checkpoint`, on the CPU. A checkpoint of several
    engines (a GAN's, `train.multi_engine`: one folder per engine under the tag) gives
    each engine's weights under its name, as the whole model names its parts."""
    manifest = checkpoint.manifest or {}
    files = list(manifest.get("files", {}))
    tag = checkpoint.prefix.rsplit("/", 1)[1]
    parts = sorted({f.split("/")[0] for f in files if f.count("/") == 1 and f.endswith(_STATES)})
    with tempfile.TemporaryDirectory(prefix="deepyard-export-") as tmp:
        root = local_copy(store, checkpoint, Path(tmp))
        if parts:
            state = {
                f"{part}.{name}": tensor
                for part in parts
                for name, tensor in _engine_state(root / tag, part, files, f"{part}/").items()
            }
        else:
            split = split_model_state(root / tag, manifest)  # pipeline stages, tensor slices
            state = split if split is not None else _engine_state(root, tag, files, "")
    if not state:
        raise CheckpointError(f"{store.shown_uri}/{checkpoint.prefix} holds no model weights")
    return {
        name: (t.detach().float() if t.is_floating_point() else t.detach()).contiguous()
        for name, t in state.items()
    }


_STATES = "mp_rank_00_model_states.pt"


def _engine_state(root: Path, tag: str, files: list[str], prefix: str) -> dict[str, torch.Tensor]:
    """One DeepSpeed engine's weights in root/tag: ZeRO partitions merged."""
    if any("optim_states" in f for f in files if f.startswith(prefix)):
        from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

        return dict(get_fp32_state_dict_from_zero_checkpoint(str(root), tag=tag))
    saved = torch.load(root / tag / _STATES, map_location="cpu", weights_only=False)
    return dict(saved["module"])


def export_safetensors(store: Store, checkpoint: Checkpoint, out: Path) -> dict[str, Any]:
    """Write the consolidated weights to `out`; returns what was written."""
    from safetensors.torch import save_file

    state = _unshared(consolidated_state_dict(store, checkpoint))
    manifest = checkpoint.manifest or {}
    spec = manifest.get("spec", {})
    metadata = {
        "format": "pt",
        "deepyard_job": str(manifest.get("job", "")),
        "deepyard_step": str(checkpoint.step),
        "deepyard_model": json.dumps(spec.get("model", {})),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(out), metadata=metadata)
    return {
        "path": str(out),
        "tensors": len(state),
        "parameters": sum(t.numel() for t in state.values()),
        "step": checkpoint.step,
    }


def _unshared(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A copy of each tensor whose memory an earlier one holds (a tied weight, e.g. a
    GPT's head and embedding): safetensors stores every name as its own tensor."""
    seen: set[int] = set()
    out = {}
    for name, tensor in state.items():
        pointer = tensor.untyped_storage().data_ptr()
        out[name] = tensor.clone() if pointer in seen else tensor
        seen.add(pointer)
    return out
