"""Model parallelism on real processes (torchrun, gloo): a GPT cut into 2 DeepSpeed
pipeline stages, or split 2 ways by tensor parallelism (AutoTP), trains the same loss
curve as one process and resumes from a checkpoint exactly; pipelines report their
stages; a pipeline checkpoint resumes on another layout on the same curve, and a
tensor-parallel one refuses to."""

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


@pytest.fixture(scope="module")
def spec(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return small_gpt_job(tmp_path_factory.mktemp("pipeline-data"), 256, 24, STEPS)


class Runs:
    """Runs made once per module, on first use."""

    def __init__(self, spec: Path, root: Path) -> None:
        self.spec, self.root, self.made = spec, root, {}

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


@pytest.mark.parametrize(
    ("saved", "resume_as"),
    [
        (("preempted", "parallelism.pipeline=2", 2), ("parallelism.pipeline=1", 1)),
        (("single-preempted", "parallelism.pipeline=1", 1), ("parallelism.pipeline=2", 2)),
    ],
    ids=["two-stages-to-one-worker", "one-worker-to-two-stages"],
)
def test_a_checkpoint_moves_between_pipeline_layouts_on_the_same_curve(
    runs: Runs, tmp_path: Path, saved: tuple[str, str, int], resume_as: tuple[str, int]
) -> None:
    """A checkpoint of 2 stages resumes on 1 worker as the whole model (a node lost), and
    one of the whole model resumes as 2 stages (ZeRO-1's universal format, renamed between
    the pipeline's layer names and the model's): the rest of the loss curve is the one an
    uninterrupted run trains."""
    key, layout, workers = saved
    single, _ = runs.get("single", workers=1)
    stopped, out = runs.get(key, layout, PREEMPT, workers=workers)
    assert stopped.summary["status"] == "preempted", stopped.stderr[-3000:]
    job = tmp_path / "job"
    shutil.copytree(out, job)
    stages, new_workers = resume_as
    argv = torchrun.command(runs.spec, job, stages, workers=new_workers)
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


def test_a_tensor_parallel_checkpoint_is_not_resumed_on_another_layout(
    runs: Runs, tmp_path: Path
) -> None:
    _, out = runs.get("tensor-preempted", TENSOR, PREEMPT)
    job = tmp_path / "job"
    shutil.copytree(out, job)
    refused = torchrun.execute(torchrun.command(runs.spec, job, workers=2), timeout=400)
    assert refused.code != 0
    assert "saved with parallelism data 1 x pipeline 1 x tensor 2" in refused.stderr
    assert "this run asks for data 2 x pipeline 1 x tensor 1" in refused.stderr
    assert "--restart" in refused.stderr


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


def test_preempted_tensor_parallel_run_resumes_exactly(runs: Runs, tmp_path: Path) -> None:
    whole, _ = runs.get("tensor", TENSOR)
    preempt = "faults=[{kind: sigterm, step: 4}]"
    stopped, out = runs.get("tensor-preempted", TENSOR, preempt)
    assert stopped.summary["status"] == "preempted", stopped.stderr[-3000:]
    job = tmp_path / "job"
    shutil.copytree(out, job)
    resumed = torchrun.execute(torchrun.command(runs.spec, job, TENSOR, preempt), timeout=400)
    assert resumed.code == 0, resumed.stderr[-3000:]
    assert resumed.summary["start_step"] == stopped.summary["steps"]
    reference, after = whole.losses(), resumed.losses()
    assert after == {step: reference[step] for step in after}
    assert resumed.summary["eval"] == whole.summary["eval"]


@pytest.mark.parametrize("key", ["staged", "tensor"])
def test_split_checkpoints_evaluate_and_export_as_the_whole_model(
    runs: Runs, key: str, tmp_path: Path
) -> None:
    """`deepyard eval` and `deepyard checkpoint export` join the stages (or slices) back
    into the whole model: its weights are the one-process run's (the curves matched), and
    evaluated in one process it scores what the split run scored."""
    _, single_out = runs.get("single", workers=1)
    split, split_out = runs.get(key, "parallelism.pipeline=2" if key == "staged" else TENSOR)
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
