"""A checkpoint's manifest names the files that hold the model's buffers (batch-norm
statistics), so a resume on another layout reads those alone: none for the GPT, the
layer files that hold a batch norm for a CNN in pipeline stages, the one model file
otherwise; a checkpoint saved before they were recorded is still read whole."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from deepyard.checkpoint import relayout
from deepyard.errors import CheckpointError
from deepyard.models import layer_init
from deepyard.models.registry import Vocab

CNN_ARGS: dict[str, Any] = {"width": 4, "stages": 2}


def cnn() -> torch.nn.Module:
    return layer_init.build_on_meta("cnn", CNN_ARGS, (1, 8, 8), 3)


def gpt() -> torch.nn.Module:
    args: dict[str, object] = {"n_layer": 2, "n_head": 2, "d_model": 16, "max_seq_len": 8}
    return layer_init.build_on_meta("gpt", args, (8,), 2, Vocab(size=32, pad_id=0))


def buffers(model: torch.nn.Module) -> set[str]:
    return {name for name, _ in model.named_buffers()} & set(model.state_dict())


@pytest.mark.parametrize("pipeline", [False, True])
def test_a_model_without_buffers_records_no_file(pipeline: bool) -> None:
    assert relayout.buffer_files(gpt(), pipeline) == {}


def test_a_whole_cnn_keeps_every_buffer_in_its_model_file() -> None:
    model = cnn()
    files = relayout.buffer_files(model, pipeline=False)
    assert list(files) == ["mp_rank_00_model_states.pt"]
    names = files["mp_rank_00_model_states.pt"]
    assert set(names) == set(names.values()) == buffers(model)
    assert any(name.endswith("running_mean") for name in names)


def test_a_staged_cnn_names_only_the_layers_that_hold_buffers() -> None:
    model = cnn()
    layers = model.layers()  # type: ignore[operator]
    files = relayout.buffer_files(model, pipeline=True)
    with_buffers = [i for i, layer in enumerate(layers) if buffers(layer)]
    assert 0 < len(with_buffers) < len(layers)  # the pooled head has none
    assert list(files) == [f"layer_{i:02d}-model_states.pt" for i in with_buffers]
    whole = sorted(name for names in files.values() for name in names.values())
    assert whole == sorted(buffers(model))


def test_the_buffers_are_read_from_those_files_alone(tmp_path: Path) -> None:
    """Saved as DeepSpeed's pipeline saves them (one state dict per layer), then every
    layer file without buffers removed: the buffers still come back, under the whole
    model's names, with the saved values."""
    model = layer_init.materialise_all(cnn(), 0)
    for index, buffer in enumerate(b for b in model.buffers() if b.is_floating_point()):
        buffer.fill_(index + 0.5)
    files = relayout.buffer_files(model, pipeline=True)
    for index, layer in enumerate(model.layers()):  # type: ignore[operator]
        name = f"layer_{index:02d}-model_states.pt"
        if name in files:
            torch.save(layer.state_dict(), tmp_path / name)
    read = relayout.saved_buffers(tmp_path, {"buffer_files": files})
    expected = {name: model.state_dict()[name] for name in buffers(model)}
    assert read.keys() == expected.keys()
    for name, tensor in expected.items():
        assert torch.equal(read[name], tensor), name


def test_a_model_without_buffers_reads_nothing(tmp_path: Path) -> None:
    assert relayout.saved_buffers(tmp_path, {"buffer_files": {}}) == {}


def test_a_missing_buffer_file_is_named(tmp_path: Path) -> None:
    files = relayout.buffer_files(cnn(), pipeline=False)
    with pytest.raises(CheckpointError, match=r"mp_rank_00_model_states\.pt is missing"):
        relayout.saved_buffers(tmp_path, {"buffer_files": files})


def test_a_checkpoint_saved_before_the_record_is_read_whole(tmp_path: Path) -> None:
    model = layer_init.materialise_all(cnn(), 0)
    torch.save({"module": model.state_dict()}, tmp_path / "mp_rank_00_model_states.pt")
    manifest = {"parallelism": {"data": 1, "pipeline": 1, "tensor": 1}, "spec": {}}
    read = relayout.saved_buffers(tmp_path, manifest)
    assert read.keys() == model.state_dict().keys()
