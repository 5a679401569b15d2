"""Consolidated fp32 weights of a checkpoint, as safetensors, for use outside deepyard.

ZeRO-partitioned checkpoints are merged with DeepSpeed's own consolidation
(`zero_to_fp32`); unpartitioned ones (ZeRO-0) hold the whole module already.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import torch

from deepyard.checkpoint.manifest import Checkpoint
from deepyard.checkpoint.restore import local_copy
from deepyard.checkpoint.store import Store
from deepyard.errors import CheckpointError


def consolidated_state_dict(store: Store, checkpoint: Checkpoint) -> dict[str, torch.Tensor]:
    """The full fp32 model state of `checkpoint`, on the CPU."""
    manifest = checkpoint.manifest or {}
    tag = checkpoint.prefix.rsplit("/", 1)[1]
    with tempfile.TemporaryDirectory(prefix="deepyard-export-") as tmp:
        root = local_copy(store, checkpoint, Path(tmp))
        if any("optim_states" in name for name in manifest.get("files", {})):
            from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

            state = get_fp32_state_dict_from_zero_checkpoint(str(root), tag=tag)
        else:
            saved = torch.load(
                root / tag / "mp_rank_00_model_states.pt", map_location="cpu", weights_only=False
            )
            state = saved["module"]
    if not state:
        raise CheckpointError(f"{store.shown_uri}/{checkpoint.prefix} holds no model weights")
    return {
        name: (t.detach().float() if t.is_floating_point() else t.detach()).contiguous()
        for name, t in state.items()
    }


def export_safetensors(store: Store, checkpoint: Checkpoint, out: Path) -> dict[str, Any]:
    """Write the consolidated weights to `out`; returns what was written."""
    from safetensors.torch import save_file

    state = consolidated_state_dict(store, checkpoint)
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
