"""Which layout a checkpoint resumes on, decided before any worker starts: data x pipeline
x tensor layouts move (with the universal format of ZeRO stage 1 or 2); under ZeRO stage
0, tensor slices move between data x tensor layouts and pipeline stages do not; each
refusal names the saved layout and the fix."""

from __future__ import annotations

from typing import Any

import pytest

from deepyard.checkpoint import relayout
from deepyard.errors import CheckpointError
from deepyard.launch.attempts import _check_resumable
from deepyard.models import registry
from deepyard.spec import load_text
from deepyard.testing.jobs import GPT_JOB as GPT
from deepyard.train.topology import Layout


def job(workers: int, parallelism: str) -> Any:
    text = GPT + f"resources:\n  num_workers: {workers}\nparallelism: {{{parallelism}}}\n"
    return load_text(text, "job.yaml")


def manifest(workers: int, parallelism: str) -> dict[str, Any]:
    """What a checkpoint of `job(workers, parallelism)` records."""
    spec = job(workers, parallelism)
    layout = {
        "data": spec.data_parallel_size,
        "pipeline": spec.parallelism.pipeline,
        "tensor": spec.parallelism.tensor,
    }
    saved = {
        "spec": spec.model_dump(mode="json"),
        "world_size": workers,
        "parallelism": layout,
        "step": 40,
    }
    if spec.parallelism.pipeline > 1:
        saved["pipeline_layers"] = registry.pipeline_layers("gpt", {"size": "tiny"})
    return saved


@pytest.mark.parametrize(
    ("saved", "now"),
    [
        ((2, "pipeline: 2, zero_stage: 1"), (1, "zero_stage: 1")),  # a node lost
        ((1, "zero_stage: 1"), (2, "pipeline: 2, zero_stage: 1")),
        ((2, "pipeline: 2, zero_stage: 1"), (4, "pipeline: 4, zero_stage: 1")),
        ((2, "pipeline: 2, zero_stage: 1"), (4, "data: 2, pipeline: 2, zero_stage: 1")),
        ((2, "zero_stage: 0"), (1, "zero_stage: 0")),  # data parallelism: always
        ((2, "tensor: 2, zero_stage: 1"), (1, "zero_stage: 1")),  # a GPU lost
        ((1, "zero_stage: 1"), (2, "tensor: 2, zero_stage: 1")),
        ((2, "tensor: 2, zero_stage: 2"), (2, "zero_stage: 2")),  # to data parallelism
        ((2, "data: 2, zero_stage: 2"), (2, "tensor: 2, zero_stage: 2")),
        ((2, "tensor: 2, zero_stage: 1"), (4, "data: 2, tensor: 2, zero_stage: 1")),
        ((2, "tensor: 2, zero_stage: 1"), (2, "pipeline: 2, zero_stage: 1")),
        ((2, "pipeline: 2, zero_stage: 1"), (2, "tensor: 2, zero_stage: 1")),
        # ZeRO-0: each tensor rank's file holds its slices' optimizer state, cut anew
        ((2, "tensor: 2"), (4, "data: 2, tensor: 2")),
        ((2, "tensor: 2"), (1, "")),
        ((1, ""), (2, "tensor: 2")),
        ((4, "data: 2, tensor: 2"), (2, "")),
    ],
)
def test_data_pipeline_and_tensor_layouts_move(
    saved: tuple[int, str], now: tuple[int, str]
) -> None:
    _check_resumable(job(*now), manifest(*saved), "ckpt")


def test_zero_0_tensor_slices_do_not_become_pipeline_stages() -> None:
    """A pipeline takes its optimizer state from ZeRO partitions: a ZeRO-0 tensor
    checkpoint has none."""
    before = manifest(2, "tensor: 2")
    with pytest.raises(CheckpointError) as info:
        _check_resumable(job(2, "pipeline: 2"), before, "c")
    message = str(info.value)
    assert "saved with parallelism data 1 x pipeline 1 x tensor 2" in message
    assert "this run asks for data 1 x pipeline 2 x tensor 1" in message
    assert "pipeline stages take their optimizer state from ZeRO partitions" in message
    assert "(runs with zero_stage 1 do)" in message and "--restart" in message


def test_a_zero_0_pipeline_checkpoint_resumes_only_on_its_layout() -> None:
    """Without ZeRO partitions there is no universal conversion: each stage's optimizer
    state is a list by position, which another cut would load onto other layers."""
    with pytest.raises(CheckpointError, match="with zero_stage 0 each pipeline stage"):
        _check_resumable(job(1, "zero_stage: 0"), manifest(2, "pipeline: 2"), "ckpt")
    with pytest.raises(CheckpointError, match="with zero_stage 0 each pipeline stage"):
        _check_resumable(job(2, "tensor: 2"), manifest(2, "pipeline: 2"), "ckpt")


@pytest.mark.parametrize(
    ("saved", "now"),
    [
        ((4, "pipeline: 2, tensor: 2, zero_stage: 1"), (1, "zero_stage: 1")),
        (
            (4, "pipeline: 2, tensor: 2, zero_stage: 1"),
            (8, "data: 2, pipeline: 2, tensor: 2, zero_stage: 1"),
        ),
        ((2, "pipeline: 2, zero_stage: 1"), (4, "pipeline: 2, tensor: 2, zero_stage: 1")),
    ],
)
def test_stages_and_slices_together_resume_only_on_their_layout(
    saved: tuple[int, str], now: tuple[int, str]
) -> None:
    """A stage's tensor slices are deepyard's own layers (train/stage_tensor.py), which
    leave DeepSpeed's universal conversion no record of how they were cut."""
    with pytest.raises(CheckpointError) as info:
        _check_resumable(job(*now), manifest(*saved), "ckpt")
    message = str(info.value)
    assert "pipeline stages and tensor slices together resume" in message
    assert "--restart" in message


def test_the_same_stages_cut_elsewhere_are_refused() -> None:
    saved = manifest(2, "pipeline: 2, zero_stage: 1")
    now = job(2, "pipeline: 2, zero_stage: 1, pipeline_partition: layers")
    with pytest.raises(CheckpointError, match="parallelism="):
        _check_resumable(now, saved, "ckpt")


def test_the_check_leaves_the_manifest_as_read() -> None:
    saved = manifest(2, "pipeline: 2, zero_stage: 1")
    before = repr(saved)
    _check_resumable(job(1, "zero_stage: 1"), saved, "ckpt")
    assert repr(saved) == before


def test_a_pipeline_checkpoint_cut_into_other_layers_is_refused_before_the_workers_start() -> None:
    """Layer files are named by index: a checkpoint of the GPT as an earlier deepyard cut
    it (the embedding one layer, not two) would load blocks into the wrong layers."""
    saved = manifest(2, "pipeline: 2, zero_stage: 1")
    del saved["pipeline_layers"]
    with pytest.raises(CheckpointError) as info:
        _check_resumable(job(2, "pipeline: 2, zero_stage: 1"), saved, "ckpt")
    message = str(info.value)
    assert "holds the model cut into the layers of an earlier deepyard" in message
    assert "cuts model gpt into 6" in message and "--restart" in message


@pytest.mark.parametrize(
    ("saved", "now", "conversion"),
    [
        ((2, "tensor: 2, zero_stage: 1"), (1, "zero_stage: 1"), "universal"),
        ((2, "tensor: 2, zero_stage: 1"), (2, "tensor: 2, zero_stage: 1"), None),
        ((2, "tensor: 2"), (1, ""), "reslice"),
        ((1, ""), (2, "tensor: 2"), "reslice"),
        ((2, "tensor: 2"), (4, "data: 2, tensor: 2"), None),  # each rank loads its file
        ((2, ""), (1, ""), None),
    ],
)
def test_each_move_takes_its_conversion(
    saved: tuple[int, str], now: tuple[int, str], conversion: str | None
) -> None:
    """ZeRO partitions go through DeepSpeed's universal format; ZeRO-0 tensor slices at
    another tensor degree are cut anew by deepyard; anything else loads as saved."""
    before = manifest(*saved)
    spec = job(*saved)
    partitioned = spec.parallelism.zero_stage > 0
    before["files"] = [
        f"mp_rank_{t:02d}_model_states.pt" for t in range(spec.parallelism.tensor)
    ] + (["zero_pp_rank_0_mp_rank_00_optim_states.pt"] if partitioned else [])
    layout = Layout.of(job(*now))
    assert relayout.needs_universal(before, layout) == (conversion == "universal")
    assert relayout.needs_reslice(before, layout) == (conversion == "reslice")
