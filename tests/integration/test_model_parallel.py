"""Model parallelism on real processes (torchrun, gloo): a GPT cut into 2 DeepSpeed
pipeline stages, split 2 ways by tensor parallelism (AutoTP), or both (2 stages x 2
tensor slices on 4 ranks), trains the same loss curve as one process and resumes from a
checkpoint exactly; pipelines report their stages; a pipeline or tensor-parallel
checkpoint resumes on another layout on the same curve (tensor slices under ZeRO stage 0
too), and ZeRO-0 slices do not become stages."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from deepyard.testing import torchrun
from deepyard.testing.jobs import small_gpt_job
from deepyard.testing.torchrun import Run

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(900)]

STEPS = 8
# fp32 on CPU: the stages compute the same operations as one process, in the same order,
# except that the tied embedding's gradient is the sum of two all-reduced halves; measured
# differences are ~1e-7 relative.
LOSS_RTOL = 1e-5
TENSOR = "parallelism.tensor=2"
CLIP = "optimizer.grad_clip=0.5"  # engages from step 2 on (the unclipped curve differs)
# key → (overrides, workers) of each split run, and the one-process run it must match.
SPLIT: dict[str, tuple[tuple[str, ...], int]] = {
    "staged": (("parallelism.pipeline=2",), 2),
    "tensor": ((TENSOR,), 2),
    "pipe-tensor": (("parallelism.pipeline=2", TENSOR, CLIP), 4),
}
REFERENCE = {"staged": ("single",), "tensor": ("single",), "pipe-tensor": ("single-clipped", CLIP)}


@pytest.fixture(scope="module")
def spec(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return small_gpt_job(tmp_path_factory.mktemp("pipeline-data"), 256, 24, STEPS)


class Runs:
    """Runs made once per module, on first use."""

    def __init__(self, spec: Path, root: Path) -> None:
        self.spec, self.root = spec, root
        self.made: dict[str, tuple[Run, Path]] = {}

    def get(self, key: str, *overrides: str, workers: int = 2) -> tuple[Run, Path]:
        if key not in self.made:
            out = self.root / key
            argv = torchrun.command(self.spec, out, *overrides, workers=workers)
            self.made[key] = (torchrun.execute(argv, timeout=400), out)
        return self.made[key]


@pytest.fixture(scope="module")
def runs(spec: Path, tmp_path_factory: pytest.TempPathFactory) -> Runs:
    return Runs(spec, tmp_path_factory.mktemp("pipeline-runs"))


COMPUTE = "parallelism.pipeline_partition=compute"


@pytest.mark.parametrize(
    ("key", "partition"),
    [("staged", []), ("by-compute", [COMPUTE])],
    ids=["by-parameters", "by-compute"],
)
def test_two_stages_train_the_curve_of_one_process(
    runs: Runs, key: str, partition: list[str]
) -> None:
    single, _ = runs.get("single", workers=1)
    staged, _ = runs.get(key, "parallelism.pipeline=2", *partition)
    assert single.code == 0, single.stderr[-3000:]
    assert staged.code == 0, staged.stderr[-3000:]
    one, two = single.losses(), staged.losses()
    assert sorted(two) == list(range(1, STEPS + 1))
    assert one[STEPS] < one[1] - 0.5  # it learns: the comparison is not of flat curves
    for step in one:
        assert two[step] == pytest.approx(one[step], rel=LOSS_RTOL), step
    # Evaluation runs on the last stage and reaches rank 0's summary, exactly.
    assert staged.summary["eval"]["loss"] == pytest.approx(single.summary["eval"]["loss"], 1e-5)
    assert staged.summary["eval"]["num_samples"] == 24
    # One replica: the same samples per step; its tokens are counted once, not per stage.
    assert staged.summary["samples"] == single.summary["samples"] == STEPS * 16
    assert staged.summary["tokens_per_s"] > 0


def test_stages_split_by_parameters_or_by_layer_count(runs: Runs) -> None:
    by_params, _ = runs.get("staged", "parallelism.pipeline=2")
    by_count, _ = runs.get(
        "by-count", "parallelism.pipeline=2", "parallelism.pipeline_partition=layers"
    )
    assert by_count.code == 0, by_count.stderr[-3000:]
    # token lookup, positions, 4 blocks, final norm, tied head = 8 layers
    assert [s["layers"] for s in by_count.summary["pipeline_stages"]] == [[0, 4], [4, 8]]
    stages = by_params.summary["pipeline_stages"]
    assert stages[0]["kinds"][:2] == ["TokenLookup", "AddPositions"]
    assert stages[-1]["kinds"][-1] == "Linear"
    # Both ends hold the tied 30,522 x 32 vocabulary matrix, which outweighs the blocks:
    # balanced by parameters, each stage takes one end and two blocks.
    assert [s["layers"] for s in stages] == [[0, 4], [4, 8]]
    assert stages[0]["parameters"] == pytest.approx(stages[1]["parameters"], rel=0.01)
    # In FLOPs the head (2 x 30,522 x 32 per token) outweighs the 4 blocks: 94% of the
    # forward; each stage's share is in the summary whatever the method.
    assert sum(s["flops_share"] for s in stages) == pytest.approx(1.0, abs=1e-3)
    by_compute, _ = runs.get("by-compute", "parallelism.pipeline=2", COMPUTE)
    assert by_compute.code == 0, by_compute.stderr[-3000:]
    cut = by_compute.summary["pipeline_stages"]
    assert [s["layers"] for s in cut] == [[0, 7], [7, 8]]
    assert cut[1]["kinds"] == ["Linear"] and cut[1]["flops_share"] == pytest.approx(0.9445, 1e-3)
    assert stages[1]["flops_share"] > cut[1]["flops_share"]  # the head stage lost 2 blocks


def test_preempted_pipeline_resumes_exactly(runs: Runs, tmp_path: Path) -> None:
    whole, _ = runs.get("staged", "parallelism.pipeline=2")
    preempt = "faults=[{kind: sigterm, step: 4}]"
    stopped, out = runs.get("preempted", "parallelism.pipeline=2", preempt)
    assert stopped.summary["status"] == "preempted", stopped.stderr[-3000:]
    stop = stopped.summary["steps"]
    assert stopped.summary["checkpoints"]["last_step"] == stop < STEPS

    job = tmp_path / "job"
    shutil.copytree(out, job)
    argv = torchrun.command(runs.spec, job, "parallelism.pipeline=2", preempt)
    resumed = torchrun.execute(argv, timeout=400)

    assert resumed.code == 0, resumed.stderr[-3000:]
    assert resumed.summary["start_step"] == stop
    reference, after = whole.losses(), resumed.losses()
    assert sorted(after) == list(range(stop + 1, STEPS + 1))
    assert after == {step: reference[step] for step in after}  # bit for bit
    assert resumed.summary["eval"] == whole.summary["eval"]


PREEMPT = "faults=[{kind: sigterm, step: 4}]"


ZERO_0 = "parallelism.zero_stage=0"


@pytest.mark.parametrize(
    ("saved", "resume_as"),
    [
        (("preempted", "parallelism.pipeline=2", 2), ("parallelism.pipeline=1", 1)),
        (("single-preempted", "parallelism.pipeline=1", 1), ("parallelism.pipeline=2", 2)),
        (("tensor-preempted", TENSOR, 2), ("parallelism.tensor=1", 1)),
        (("single-preempted", "parallelism.pipeline=1", 1), (TENSOR, 2)),
        (("tensor-zero-0-preempted", f"{TENSOR} {ZERO_0}", 2), (ZERO_0, 1)),
    ],
    ids=[
        "two-stages-to-one-worker",
        "one-worker-to-two-stages",
        "two-tensor-slices-to-one-worker",
        "one-worker-to-two-tensor-slices",
        "zero-0-two-tensor-slices-to-one-worker",
    ],
)
def test_a_checkpoint_moves_between_model_parallel_layouts_on_the_same_curve(
    runs: Runs, tmp_path: Path, saved: tuple[str, str, int], resume_as: tuple[str, int]
) -> None:
    """A checkpoint of 2 stages, or of 2 tensor slices, resumes on 1 worker as the whole
    model (a node or a GPU lost), and one of the whole model resumes as 2 stages or 2
    slices (ZeRO-1's universal format: renamed between the pipeline's layer names and
    the model's; AutoTP's slices joined by DeepSpeed, the fused qkv part by part, and cut
    anew on load; under ZeRO-0, slices and Adam moments cut anew by the tensor plan):
    the rest of the loss curve is the one an uninterrupted run of the same ZeRO stage
    trains."""
    key, layout, workers = saved
    split, new_workers = resume_as
    # ZeRO-0 and ZeRO-1 round differently (Adam on each tensor or on a flat partition).
    reference_run = ("single-zero-0", ZERO_0) if ZERO_0 in layout else ("single",)
    single, _ = runs.get(*reference_run, workers=1)
    stopped, out = runs.get(key, *layout.split(), PREEMPT, workers=workers)
    assert stopped.summary["status"] == "preempted", stopped.stderr[-3000:]
    job = tmp_path / "job"
    shutil.copytree(out, job)
    argv = torchrun.command(runs.spec, job, split, workers=new_workers)
    resumed = torchrun.execute(argv, timeout=400)

    assert resumed.code == 0, resumed.stderr[-3000:]
    stop = stopped.summary["steps"]
    assert resumed.summary["start_step"] == stop
    reference, after = single.losses(), resumed.losses()
    assert sorted(after) == list(range(stop + 1, STEPS + 1))
    for step in after:
        assert after[step] == pytest.approx(reference[step], rel=LOSS_RTOL), step
    assert resumed.summary["eval"]["loss"] == pytest.approx(
        single.summary["eval"]["loss"], rel=1e-5
    )


def test_zero_0_tensor_slices_are_not_resumed_as_pipeline_stages(
    runs: Runs, tmp_path: Path
) -> None:
    """A pipeline takes its optimizer state from ZeRO partitions, which a ZeRO stage 0
    checkpoint does not have: refused, with the fix, before any training."""
    stopped, out = runs.get("tensor-zero-0-preempted", TENSOR, ZERO_0, PREEMPT)
    assert stopped.summary["status"] == "preempted", stopped.stderr[-3000:]
    job = tmp_path / "job"
    shutil.copytree(out, job)
    argv = torchrun.command(runs.spec, job, ZERO_0, "parallelism.pipeline=2")
    refused = torchrun.execute(argv, timeout=400)
    assert refused.code != 0
    assert "saved with parallelism data 1 x pipeline 1 x tensor 2" in refused.stderr
    assert "this run asks for data 1 x pipeline 2 x tensor 1" in refused.stderr
    assert "pipeline stages take their optimizer state from ZeRO partitions" in refused.stderr
    assert "--restart" in refused.stderr
    assert "] step " not in refused.stderr  # no training step ran


def test_tensor_parallel_ranks_train_the_curve_of_one_process(runs: Runs) -> None:
    single, _ = runs.get("single", workers=1)
    split, _ = runs.get("tensor", TENSOR)
    assert split.code == 0, split.stderr[-3000:]
    one, two = single.losses(), split.losses()
    for step in one:
        assert two[step] == pytest.approx(one[step], rel=LOSS_RTOL), step
    assert split.summary["eval"]["loss"] == pytest.approx(single.summary["eval"]["loss"], 1e-5)
    assert split.summary["eval"]["num_samples"] == 24  # scored once, not once per rank
    assert split.summary["samples"] == single.summary["samples"]


@pytest.mark.parametrize("zero", [1, 0], ids=["zero-1", "zero-0"])
def test_pipeline_and_tensor_together_train_the_curve_of_one_process(runs: Runs, zero: int) -> None:
    """2 stages, each split over 2 tensor ranks (4 ranks, one replica), with gradient
    clipping: its norm counts each shard once per tensor rank and each whole weight once,
    over the stages and slices (ZeRO-1's own; without ZeRO deepyard.train.pipe_clip's, as
    DeepSpeed's misses the later stage), so the clipped curve is one process's (ZeRO-1's
    norm rounds otherwise than ZeRO-0's: 7.7e-7 apart in one process, far below the
    4.7e-4 that DeepSpeed's own ZeRO-0 norm put the split run off)."""
    single, _ = runs.get(*REFERENCE["pipe-tensor"], workers=1)
    unclipped, _ = runs.get("single", workers=1)
    staged, _ = runs.get("staged", *SPLIT["staged"][0])
    overrides, workers = SPLIT["pipe-tensor"]
    key = "pipe-tensor" if zero == 1 else f"pipe-tensor-zero-{zero}"  # the spec's is 1
    split, _ = runs.get(key, *overrides, f"parallelism.zero_stage={zero}", workers=workers)
    assert split.code == 0, split.stderr[-3000:]
    one, four = single.losses(), split.losses()
    assert sorted(four) == list(range(1, STEPS + 1))
    assert one[STEPS] < one[1] - 0.5
    assert one[STEPS] != pytest.approx(unclipped.losses()[STEPS], rel=1e-6)  # clipping acts
    for step in one:
        assert four[step] == pytest.approx(one[step], rel=LOSS_RTOL), step
    assert split.summary["eval"]["loss"] == pytest.approx(single.summary["eval"]["loss"], 1e-5)
    assert split.summary["eval"]["num_samples"] == 24  # scored by one rank of the last stage
    assert split.summary["samples"] == single.summary["samples"] == STEPS * 16
    assert split.summary["tokens_per_s"] > 0
    assert split.summary["parallelism"] == {"data": 1, "pipeline": 2, "tensor": 2}
    # The stages hold the same layers as without slices; parameters count whole weights.
    assert split.summary["pipeline_stages"] == staged.summary["pipeline_stages"]


@pytest.mark.parametrize("key", ["tensor", "pipe-tensor"])
def test_preempted_tensor_parallel_run_resumes_exactly(
    runs: Runs, tmp_path: Path, key: str
) -> None:
    layout, workers = SPLIT[key]
    whole, _ = runs.get(key, *layout, workers=workers)
    preempt = "faults=[{kind: sigterm, step: 4}]"
    stopped, out = runs.get(f"{key}-preempted", *layout, preempt, workers=workers)
    assert stopped.summary["status"] == "preempted", stopped.stderr[-3000:]
    job = tmp_path / "job"
    shutil.copytree(out, job)
    argv = torchrun.command(runs.spec, job, *layout, preempt, workers=workers)
    resumed = torchrun.execute(argv, timeout=400)
    assert resumed.code == 0, resumed.stderr[-3000:]
    assert resumed.summary["start_step"] == stopped.summary["steps"]
    reference, after = whole.losses(), resumed.losses()
    assert after == {step: reference[step] for step in after}
    assert resumed.summary["eval"] == whole.summary["eval"]


@pytest.mark.parametrize("key", ["staged", "tensor", "pipe-tensor"])
def test_split_checkpoints_evaluate_and_export_as_the_whole_model(
    runs: Runs, key: str, tmp_path: Path
) -> None:
    """`deepyard eval` and `deepyard checkpoint export` join the stages (and/or slices)
    back into the whole model: its weights are the one-process run's (the curves matched),
    and evaluated in one process it scores what the split run scored."""
    _, single_out = runs.get(*REFERENCE[key], workers=1)
    layout, workers = SPLIT[key]
    split, split_out = runs.get(key, *layout, workers=workers)
    weights = {}
    for name, out in (("single", single_out), (key, split_out)):
        target = tmp_path / f"{name}.safetensors"
        cli("checkpoint", "export", str(out / "pipe-gpt" / "checkpoints"), "--out", str(target))
        weights[name] = load_file(str(target))
    assert weights[key].keys() == weights["single"].keys()
    # atol: an element whose first gradient is near Adam's eps (1e-8) takes a first step
    # that magnifies rounding differences of that gradient (one element at 1.2e-5 seen).
    for name, tensor in weights["single"].items():
        torch.testing.assert_close(weights[key][name], tensor, rtol=1e-4, atol=5e-5, msg=name)
    scored = json.loads(cli("eval", str(split.run_dir), "--json"))
    assert scored["metrics"]["loss"] == pytest.approx(split.summary["eval"]["loss"], rel=1e-5)


def cli(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "deepyard.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout
