"""A checkpoint resumed on another data x pipeline x tensor layout.

DeepSpeed's universal format (`restore.to_universal`) holds every parameter's fp32 weights
and optimizer moments in a folder of its own (`zero/<parameter name>/`), whatever the ZeRO
partitioning, and the new engine takes from it the parameters it holds. A pipeline names
its parameters by layer (`3.attn.qkv.weight`, `tied_modules.tied_0.weight`; see
`train.pipeline.stage_names`), a whole model by module path (`blocks.2.attn.qkv.weight`):
between the two the folders are renamed; between stage counts the names already agree.
Tensor slices need nothing here: AutoTP records how it cut each weight (by output, by
input, the fused qkv part by part) in the checkpoint, DeepSpeed's conversion joins the
slices into whole weights, and each AutoTP layer of the new engine takes its own slice.
What the universal load leaves out is moved here too: the module's buffers (batch-norm
statistics) and each data replica's position in the epoch.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import torch

from deepyard.checkpoint.split_export import meta_model, split_model_state
from deepyard.data.order import reshard
from deepyard.errors import CheckpointError
from deepyard.train.topology import Layout


def saved_layout(manifest: dict[str, Any]) -> Layout:
    """The layout a checkpoint was saved with (data parallelism alone before it was recorded)."""
    layout = {"data": manifest["world_size"], "pipeline": 1, "tensor": 1}
    layout.update(manifest.get("parallelism") or {})
    return Layout(layout["data"], layout["pipeline"], layout["tensor"])


def check_layers(manifest: dict[str, Any], layers: int | None) -> None:
    """A pipeline checkpoint names its files and parameters by layer index: it reads back
    only into a model cut into the same `layers` (recorded since the GPT's embedding
    became two layers: its token lookup, tied to the head, and its position table)."""
    saved = manifest.get("pipeline_layers")
    if saved_layout(manifest).pipeline == 1 or saved == layers:
        return
    cut = f"{saved} layers" if saved is not None else "the layers of an earlier deepyard"
    raise CheckpointError(
        f"the pipeline checkpoint at step {manifest.get('step')} holds the model cut into "
        f"{cut}, and this deepyard cuts model {manifest['spec']['model']['name']} into "
        f"{layers}; read it with the deepyard version that saved it, or start over with "
        "--restart"
    )


def needs_universal(manifest: dict[str, Any], layout: Layout) -> bool:
    """Whether loading on `layout` needs the universal format: ZeRO partitions saved on
    another layout."""
    partitioned = any("optim_states" in name for name in manifest["files"])
    return partitioned and saved_layout(manifest) != layout


def needs_reslice(manifest: dict[str, Any], layout: Layout) -> bool:
    """Whether loading on `layout` needs a ZeRO stage 0 tensor-parallel checkpoint cut
    for another tensor degree (`tensor_slices.reslice`): without ZeRO partitions there is
    no universal conversion."""
    partitioned = any("optim_states" in name for name in manifest["files"])
    return not partitioned and saved_layout(manifest).tensor != layout.tensor


def rename_parameters(folder: Path, manifest: dict[str, Any], to_pipeline: bool) -> None:
    """Rename the per-parameter folders of a universal checkpoint (`folder/zero/`) from the
    saved model's names to those of the engine that loads it."""
    from deepyard.train.pipeline import stage_names

    if (saved_layout(manifest).pipeline > 1) == to_pipeline:
        return
    names = stage_names(meta_model(manifest))
    if not to_pipeline:  # a tied weight: under its first name, as DeepSpeed names it
        names = {staged: whole for whole, staged in reversed(names.items())}
    zero, renamed = folder / "zero", folder / "zero.renamed"
    renamed.mkdir()
    for entry in sorted(zero.iterdir()):
        if not entry.is_dir():  # optimizer_state.pt: the optimizer's own settings
            shutil.move(entry, renamed / entry.name)
            continue
        if entry.name not in names:
            raise CheckpointError(
                f"{folder}: the checkpoint holds a parameter {entry.name} the model "
                f"{manifest['spec']['model']['name']} does not have; resume with the "
                "layout it was saved with"
            )
        if not (renamed / names[entry.name]).exists():  # a tied weight's second name
            shutil.move(entry, renamed / names[entry.name])
    shutil.rmtree(zero)
    renamed.rename(zero)


def whole_state(folder: Path, manifest: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The saved model's state under the whole model's names."""
    split = split_model_state(folder, manifest)
    if split is not None:
        return split
    saved = torch.load(folder / MODEL_FILE, map_location="cpu", weights_only=False)
    return dict(saved["module"])


MODEL_FILE = "mp_rank_00_model_states.pt"  # the whole model, or tensor rank 0's slices


def buffer_files(model: torch.nn.Module, pipeline: bool) -> dict[str, dict[str, str]]:
    """Where a checkpoint of `model` (the whole model, on the meta device or not) keeps
    its buffers (batch-norm statistics; the ones its state_dict saves): file → {name in
    the file: name in the whole model}; {} when it has none (the GPT). Recorded in the
    manifest at save time, so that a resume on another layout reads only these files.
    A pipeline saves each layer in a file of its own (a tied layer in its first use); the
    whole model, or tensor rank 0 (AutoTP splits Linear weights only), keeps them all in
    one file."""
    state = model.state_dict(keep_vars=True)
    held = {id(buffer) for _, buffer in model.named_buffers()}
    names = {id(tensor): name for name, tensor in state.items() if id(tensor) in held}
    if not names:
        return {}
    if not pipeline:
        return {MODEL_FILE: {name: name for name in sorted(names.values())}}
    files: dict[str, dict[str, str]] = {}
    seen: set[int] = set()
    for index, layer in enumerate(model.layers()):  # type: ignore[operator]
        own = {
            local: names[id(tensor)]
            for local, tensor in layer.state_dict(keep_vars=True).items()
            if id(tensor) in names and id(tensor) not in seen
        }
        seen.update(id(tensor) for tensor in layer.state_dict(keep_vars=True).values())
        if own:
            files[f"layer_{index:02d}-model_states.pt"] = own
    return files


def saved_buffers(folder: Path, manifest: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The saved model's buffers under the whole model's names, read from the files the
    manifest names (none for a model without buffers); a checkpoint saved before they
    were recorded is read whole."""
    files = manifest.get("buffer_files")
    if files is None:
        return whole_state(folder, manifest)
    state: dict[str, torch.Tensor] = {}
    for file, names in files.items():
        path = folder / file
        if not path.exists():
            raise CheckpointError(f"{path} is missing from the checkpoint")
        saved = torch.load(path, map_location="cpu", weights_only=False)
        entries = saved["module"] if file == MODEL_FILE else saved
        state.update({whole: entries[local] for local, whole in names.items()})
    return state


def load_buffers(
    module: torch.nn.Module, whole: dict[str, torch.Tensor], manifest: dict[str, Any]
) -> None:
    """The buffers (batch-norm running statistics, counters) of `whole` that `module` (a
    whole model or one pipeline stage) holds: DeepSpeed's universal load restores
    parameters and optimizer state, not buffers."""
    from deepspeed.pipe import PipelineModule

    from deepyard.train.pipeline import stage_names

    if not whole:
        return
    if isinstance(module, PipelineModule):
        names = stage_names(meta_model(manifest))
        whole = {names[name]: tensor for name, tensor in whole.items() if name in names}
    held = {name for name, _ in module.named_buffers()}
    module.load_state_dict({k: v for k, v in whole.items() if k in held}, strict=False)


def cursor(manifest: dict[str, Any], layout: Layout, rank: int, batch_size: int) -> dict[str, Any]:
    """This rank's data cursor on `layout`: the rows no saved replica has read yet, shared
    among the new replicas (the ranks of one pipeline read the same rows)."""
    by_replica = {r["cursor"]["rank"]: r["cursor"] for r in manifest["ranks"]}
    return reshard(list(by_replica.values()), layout.data, batch_size)[layout.replica(rank)]
