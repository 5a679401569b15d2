"""Checkpoints under real failures: preempt, kill, hang, corrupt, fill the disk, change the spec.

Every test runs the digits example as a user does (torchrun, or `deepyard run` with its
embedded Ray) and asserts what a user would notice: the exit code, the message on stderr,
the loss curve after a resume, the files in the checkpoint store.

Shared set-up: one uninterrupted and one preempted run per ZeRO stage, made on first use
and copied into each test that resumes from it (a resume writes into its lineage).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pyarrow.parquet as pq
import pytest

from deepyard.testing.torchrun import Run, command, execute, kill_tree

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(900)]

SPEC = Path(__file__).resolve().parents[2] / "jobs" / "examples" / "digits_cnn.yaml"
DEEPYARD = [sys.executable, "-m", "deepyard.cli.main", "run", str(SPEC)]

MAX_STEPS = 24  # digits: 1,437 rows / 64 per step = 22 steps an epoch, so one rollover
EPOCH_POSITIONS = 22 * 64  # drop-last: the positions one epoch trains on
# A fixed global batch, so the same job also runs on one worker (64 per step either way).
COMMON = [
    "training.epochs=null",
    f"training.max_steps={MAX_STEPS}",
    "data.batch_size=null",
    "data.global_batch_size=64",
    "checkpoint.every_steps=5",
]
PREEMPT = "faults=[{kind: sigterm, step: 7}]"
DROPOUT = {1: 0.0, 2: 0.2, 3: 0.2}  # with dropout, only restored RNG states resume exactly
# Resuming on another world size regroups the batches (2 x 32 rows vs 1 x 64 of other
# rows), redraws dropout masks and changes batch-norm statistics, so per-step losses move.
# Measured on digits, ZeRO-2, resumed at step 7-8 (dropout 0.2 / 0.0):
#   per-step mean |diff| 0.073 / 0.066 (2->1), 0.043 / 0.042 (1->2), max 0.19;
#   mean over the resumed steps within 0.006 with the earlier initial weights, 0.037
#   (2->1) and 0.015 (1->2) with the per-layer ones (models/layer_init.py): the per-step
#   differences (sd ~0.09, both signs) average over only 13-16 steps, so 0.03 sat at one
#   standard error; final eval loss within 0.005 once batch-norm buffers are restored
#   (0.21 worse while they are not). The curve itself falls by 0.6 over those steps.
WORLD_CHANGE_STEP_DIFF = 0.15  # mean |loss diff| per resumed step
WORLD_CHANGE_MEAN_DIFF = 0.07  # |diff| of the mean loss over the resumed steps
WORLD_CHANGE_EVAL_DIFF = 0.05  # |diff| of the final eval loss


def _sets(overrides: list[str]) -> list[str]:
    return [arg for value in overrides for arg in ("--set", value)]


def torchrun(
    out: Path, *overrides: str, workers: int = 2, restart: bool = False, timeout: int = 300
) -> Run:
    """`torchrun -m deepyard.train` with the digits example, runs and checkpoints under `out`."""
    return execute(torchrun_command(out, *overrides, workers=workers, restart=restart), timeout)


def torchrun_command(
    out: Path, *overrides: str, workers: int = 2, restart: bool = False
) -> list[str]:
    return command(SPEC, out, *overrides, workers=workers, restart=restart)


def deepyard_run(out: Path, *overrides: str, restart: bool = False, timeout: int = 400) -> Run:
    command = [
        *DEEPYARD,
        "--json",
        *(["--restart"] if restart else []),
        *_sets([f"output_dir={out}", *overrides]),
    ]
    return execute(command, timeout)


def lineage_dirs(out: Path) -> list[Path]:
    return sorted(p.parent for p in (out / "digits-cnn" / "checkpoints").glob("*/lineage.json"))


def manifest(out: Path, step: int) -> dict[str, Any]:
    (lineage,) = lineage_dirs(out)
    return json.loads((lineage / f"step-{step:09d}" / "manifest.json").read_text())


def positions(cursor: dict[str, Any], consumed_only: bool) -> list[int]:
    """The epoch positions a rank's data cursor holds: all, or those already trained on."""
    out = [p for lo, hi in cursor["ranges"] for p in range(lo, hi)]
    return out[: cursor["consumed"]] if consumed_only else out


class SharedRuns:
    """Runs made once per module, on first use; tests copy them before writing into them."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._runs: dict[str, tuple[Run, Path]] = {}

    def uninterrupted(self, zero: int, workers: int = 2) -> tuple[Run, Path]:
        return self._get(f"whole-z{zero}-w{workers}", zero, workers, [])

    def preempted(self, zero: int, workers: int = 2) -> tuple[Run, Path]:
        return self._get(f"preempted-z{zero}-w{workers}", zero, workers, [PREEMPT])

    def _get(self, key: str, zero: int, workers: int, extra: list[str]) -> tuple[Run, Path]:
        if key not in self._runs:
            out = self.root / key
            run = torchrun(out, *job(zero), *extra, workers=workers)
            self._runs[key] = (run, out)
        return self._runs[key]


def job(zero: int) -> list[str]:
    return [*COMMON, f"parallelism.zero_stage={zero}", f"model.args.dropout={DROPOUT[zero]}"]


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> SharedRuns:
    return SharedRuns(tmp_path_factory.mktemp("shared-runs"))


def copy_of(out: Path, tmp_path: Path) -> Path:
    target = tmp_path / "job"
    shutil.copytree(out, target)
    return target


# --- 1. preemption and exact resume --------------------------------------------------------


@pytest.mark.parametrize("zero", [1, 2, 3])
def test_preempted_run_resumes_bit_for_bit(shared: SharedRuns, tmp_path: Path, zero: int) -> None:
    """SIGTERM mid-run (to torchrun, as a preemption) → checkpoint at the next step and
    stop; the same command again → the rest of the run with exactly the losses and final
    evaluation of a run that was never stopped (ZeRO partitions, optimizer, LR schedule,
    data position, RNG states with dropout, batch-norm statistics of every rank)."""
    whole, _ = shared.uninterrupted(zero)
    stopped, out = shared.preempted(zero)
    assert whole.code == 0, whole.stderr[-3000:]
    # Rank 0 exits 143, but torchrun's agent, itself SIGTERMed, exits 1 (SignalException).
    assert stopped.code != 0 and stopped.summary["status"] == "preempted", stopped.stderr[-3000:]
    stop_step = stopped.summary["steps"]
    assert 7 <= stop_step < MAX_STEPS
    assert stopped.summary["checkpoints"]["last_step"] == stop_step

    resumed = torchrun(copy_of(out, tmp_path), *job(zero), PREEMPT)

    assert resumed.code == 0, resumed.stderr[-3000:]
    assert resumed.summary["status"] == "succeeded"
    assert resumed.summary["start_step"] == stop_step > 0
    assert resumed.summary["steps"] == MAX_STEPS
    reference, before, after = whole.losses(), stopped.losses(), resumed.losses()
    assert sorted(after) == list(range(stop_step + 1, MAX_STEPS + 1))
    assert before == {step: reference[step] for step in before}
    assert after == {step: reference[step] for step in after}  # bit for bit
    # Evaluation runs on running statistics that training losses never see.
    assert resumed.summary["eval"] == whole.summary["eval"]


# --- 2. resume on another world size --------------------------------------------------------


@pytest.mark.parametrize(("before", "after"), [(2, 1), (1, 2)], ids=["2to1", "1to2"])
def test_resume_on_another_world_size_keeps_the_curve_and_the_epoch(
    shared: SharedRuns, tmp_path: Path, before: int, after: int
) -> None:
    """Preempted on `before` workers, resumed on `after` with the same global batch: ZeRO-2
    state goes through DeepSpeed's universal format, the data cursors are resharded, so the
    epoch trains each remaining position once and the loss curve carries on."""
    whole, _ = shared.uninterrupted(2, workers=before)
    stopped, out = shared.preempted(2, workers=before)
    assert stopped.summary["status"] == "preempted", stopped.stderr[-3000:]
    stop_step = stopped.summary["steps"]
    job_dir = copy_of(out, tmp_path)
    saved = manifest(job_dir, stop_step)
    assert saved["world_size"] == before

    resumed = torchrun(job_dir, *job(2), PREEMPT, workers=after)

    assert resumed.code == 0, resumed.stderr[-3000:]
    assert resumed.summary["start_step"] == stop_step
    assert resumed.summary["steps"] == MAX_STEPS
    assert f"resumed at step {stop_step} from " in resumed.stderr
    assert f"(saved on {before} workers, now {after})" in resumed.stderr
    reference, curve = whole.losses(), resumed.losses()
    assert sorted(curve) == list(range(stop_step + 1, MAX_STEPS + 1))
    diffs = [abs(curve[step] - reference[step]) for step in curve]
    step_diff = sum(diffs) / len(diffs)
    mean_diff = abs(sum(curve.values()) - sum(reference[step] for step in curve)) / len(curve)
    eval_diff = abs(resumed.summary["eval"]["loss"] - whole.summary["eval"]["loss"])
    print(f"{before}->{after} workers: per-step {step_diff:.4f} (max {max(diffs):.4f}), ")
    print(f"mean {mean_diff:.4f}, eval loss {eval_diff:.4f}")
    assert step_diff < WORLD_CHANGE_STEP_DIFF, diffs
    assert mean_diff < WORLD_CHANGE_MEAN_DIFF
    # Evaluation uses batch norm's running statistics, which the training loss never sees.
    assert eval_diff < WORLD_CHANGE_EVAL_DIFF, (resumed.summary["eval"], whole.summary["eval"])

    # The epoch ends at step 22 as it would have without the move, and step 20's checkpoint
    # (saved on the new world size) shows why: the new ranks hold exactly the positions the
    # old ones had not trained on.
    history = resumed.history()
    epochs = dict(zip(history["step"], history["epoch"], strict=True))
    assert {s: e for s, e in epochs.items() if s <= 22} == {s: 0 for s in curve if s <= 22}
    assert {s: e for s, e in epochs.items() if s > 22} == {23: 1, 24: 1}
    trained = [p for r in saved["ranks"] for p in positions(r["cursor"], consumed_only=True)]
    later = manifest(job_dir, 20)
    assert later["world_size"] == after
    assigned = [p for r in later["ranks"] for p in positions(r["cursor"], consumed_only=False)]
    assert len(trained) == stop_step * 64 and not set(trained) & set(assigned)
    assert sorted(trained + assigned) == list(range(EPOCH_POSITIONS))
    assert sum(r["cursor"]["consumed"] for r in later["ranks"]) == (20 - stop_step) * 64


# --- 3. a corrupt checkpoint ---------------------------------------------------------------


def test_corrupt_newest_checkpoint_is_skipped_with_a_warning(
    shared: SharedRuns, tmp_path: Path
) -> None:
    """One flipped byte in the newest checkpoint: the rerun names the file, resumes from
    the checkpoint before it and still reproduces the uninterrupted losses."""
    whole, out = shared.uninterrupted(2)
    assert whole.code == 0, whole.stderr[-3000:]
    job_dir = copy_of(out, tmp_path)
    (lineage,) = lineage_dirs(job_dir)
    steps = sorted(int(p.parent.name.split("-")[1]) for p in lineage.glob("step-*/manifest.json"))
    assert steps[-2:] == [20, MAX_STEPS]
    bad = lineage / f"step-{MAX_STEPS:09d}" / "mp_rank_00_model_states.pt"
    data = bytearray(bad.read_bytes())
    data[len(data) // 2] ^= 0xFF
    bad.write_bytes(bytes(data))

    rerun = torchrun(job_dir, *job(2))

    assert rerun.code == 0, rerun.stderr[-3000:]
    assert f"checkpoint step {MAX_STEPS} cannot be trusted" in rerun.stderr
    assert f"{bad.parent.name}/{bad.name}: sha256 differs" in rerun.stderr
    assert rerun.summary["start_step"] == 20
    reference = whole.losses()
    assert rerun.losses() == {step: reference[step] for step in range(21, MAX_STEPS + 1)}


# --- 4-6. deepyard run: a killed worker, SIGTERM of the job, a hang -------------------------


@dataclass
class Live:
    """A `deepyard run` in progress: stdout goes to a file, stderr is read line by line."""

    proc: subprocess.Popen[str]
    stdout: Path
    seen: list[str]

    def wait_for(self, text: str, timeout_s: float = 300) -> None:
        assert self.proc.stderr is not None
        deadline = time.monotonic() + timeout_s
        for line in self.proc.stderr:
            self.seen.append(line)
            if text in line:
                return
            assert time.monotonic() < deadline, "".join(self.seen[-50:])
        raise AssertionError(f"{text!r} never appeared:\n{''.join(self.seen[-50:])}")

    def finish(self, timeout_s: float = 300) -> Run:
        _, rest = self.proc.communicate(timeout=timeout_s)
        lines = [x for x in self.stdout.read_text().splitlines() if x.startswith("{")]
        summary = json.loads(lines[-1]) if lines else {}
        return Run(self.proc.returncode, summary, "".join(self.seen) + rest)


@pytest.fixture
def live(tmp_path: Path) -> Iterator[Any]:
    started: list[Live] = []

    def start(*overrides: str) -> Live:
        stdout = tmp_path / f"stdout-{len(started)}.txt"
        command = [*DEEPYARD, "--json", *_sets([f"output_dir={tmp_path}", *overrides])]
        with stdout.open("w") as sink:
            proc = subprocess.Popen(command, stdout=sink, stderr=subprocess.PIPE, text=True)
        started.append(Live(proc, stdout, []))
        return started[-1]

    yield start
    for run in started:  # a failed assertion must not leave a job (and its Ray) behind
        if run.proc.poll() is None:
            kill_tree(run.proc)


LONG = ["training.epochs=null", "training.max_steps=300", "training.log_every_steps=1"]


def test_sigkilled_workers_are_replaced_and_the_job_finishes(live: Any) -> None:
    """SIGKILL from outside to every Ray worker process of the job, as when their node dies
    or the OOM killer strikes: the attempt fails, a new gang resumes from the newest
    checkpoint and the job succeeds; the recovery is on record."""
    job_run = live(*LONG, "checkpoint.every_steps=5", "failure.max_restarts=1")
    job_run.wait_for(" step 8/")
    workers = [
        p
        for p in psutil.Process(job_run.proc.pid).children(recursive=True)
        if "TrainWorker" in " ".join(p.cmdline())
    ]
    assert len(workers) == 2, [p.cmdline() for p in workers]
    for worker in workers:
        worker.send_signal(signal.SIGKILL)
    done = job_run.finish()

    assert done.code == 0, done.stderr[-3000:]
    assert done.summary["status"] == "succeeded" and done.summary["steps"] == 300
    assert done.summary["attempts"] == 2
    (recovery,) = done.summary["recoveries"]
    assert any(f"(pid {w.pid}) died" in recovery["cause"] for w in workers), recovery
    assert recovery["resumed_step"] >= 5 and recovery["resumed_step"] % 5 == 0
    assert recovery["steps_redone"] >= 0 and recovery["first_step_s"] > 0
    history = done.history()
    second = [s for s, a in zip(history["step"], history["attempt"], strict=True) if a == 2]
    assert second == list(range(recovery["resumed_step"] + 1, 301))


def test_sigterm_checkpoints_exits_143_and_the_rerun_finishes(live: Any, tmp_path: Path) -> None:
    """SIGTERM to `deepyard run` (a preemption): a checkpoint at the step it stopped at,
    exit 143 within the grace period; the same command again resumes there and finishes."""
    job_run = live(*LONG, "checkpoint.every_steps=100")
    job_run.wait_for(" step 1/")
    job_run.proc.send_signal(signal.SIGTERM)
    signalled = time.monotonic()
    stopped = job_run.finish(timeout_s=60)
    took_s = time.monotonic() - signalled

    assert stopped.code == 143, stopped.stderr[-3000:]
    assert took_s < 30, took_s
    assert stopped.summary["status"] == "preempted"
    stop_step = stopped.summary["steps"]
    assert 1 <= stop_step < 300 and stopped.summary["checkpoints"]["last_step"] == stop_step
    assert manifest(tmp_path, stop_step)["step"] == stop_step  # published, not just written

    rerun = deepyard_run(tmp_path, *LONG, "checkpoint.every_steps=100")

    assert rerun.code == 0, rerun.stderr[-3000:]
    assert rerun.summary["start_step"] == stop_step
    assert rerun.summary["status"] == "succeeded" and rerun.summary["steps"] == 300
    assert rerun.losses().keys() == set(range(stop_step + 1, 301))


@pytest.fixture(scope="module")
def faulty_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Run, dict[str, Any]]:
    """One job through two injected faults: rank 1 hangs before step 7 (attempt 1), then
    rank 0 is SIGKILLed before step 40 (attempt 2: 34 steps, long enough for the driver to
    drain rank 0's steps before it dies; 7 steps took under one drain period). Saves every
    5 steps, synchronous, so each attempt resumes from a known step. Returns the run and
    the summary it recorded (written also when the job fails)."""
    out = tmp_path_factory.mktemp("faults")
    faults = (
        "faults=[{kind: hang, step: 7, rank: 1, attempt: 1}, "
        "{kind: crash, step: 40, rank: 0, attempt: 2}]"
    )
    run = deepyard_run(
        out,
        "training.epochs=null",
        "training.max_steps=44",
        "checkpoint.every_steps=5",
        "checkpoint.async=false",
        "failure.max_restarts=2",
        "failure.hang_timeout_s=5",
        faults,
    )
    (recorded,) = (out / "digits-cnn").glob("*/summary.json")
    return run, json.loads(recorded.read_text())


def test_hang_is_detected_with_every_rank_stack_and_recovers(
    faulty_run: tuple[Run, dict[str, Any]],
) -> None:
    run, recorded = faulty_run
    hang = recorded["recoveries"][0]
    assert hang["attempt"] == 2, recorded
    assert "no step progress" in hang["cause"] and "hang_timeout_s=5" in hang["cause"]
    assert hang["resumed_step"] == 5 and hang["steps_redone"] == 1
    assert 5 <= hang["detect_s"] < 30
    run_dir = Path(recorded["run_dir"])
    stacks = (run_dir / "stacks-attempt-1.txt").read_text()
    assert "=== rank 0" in stacks and "=== rank 1" in stacks
    rank0, rank1 = stacks.split("=== rank 1")
    assert "train_step" in rank0  # waiting for its peer inside a step
    assert "in before" in rank1 and "time.sleep" in rank1  # the injected hang itself
    assert "stacks-attempt-1.txt" in run.stderr
    history = pq.read_table(run_dir / "history.parquet").to_pydict()
    steps = [s for s, a in zip(history["step"], history["attempt"], strict=True) if a <= 2]
    assert steps[:7] == [1, 2, 3, 4, 5, 6, 6]  # attempt 2 redid step 6 from step 5's save


def test_crashed_rank0_is_restarted_from_the_newest_checkpoint(
    faulty_run: tuple[Run, dict[str, Any]],
) -> None:
    """Rank 0, the one that reports progress, SIGKILLed: the job still recovers."""
    run, _ = faulty_run
    assert run.code == 0, run.stderr[-3000:]
    assert run.summary["status"] == "succeeded" and run.summary["steps"] == 44
    assert run.summary["attempts"] == 3
    crash = run.summary["recoveries"][1]
    assert crash["attempt"] == 3 and "worker rank 0" in crash["cause"] and "died" in crash["cause"]
    # Both ranks finished steps 36 to 39 before rank 0 died: four steps were redone.
    assert crash["resumed_step"] == 35 and crash["steps_redone"] == 4
    assert crash["first_step_s"] > 0 and crash["restore_s"] >= 0
    history = run.history()
    by_attempt: dict[int, list[int]] = {}
    for step, attempt in zip(history["step"], history["attempt"], strict=True):
        by_attempt.setdefault(attempt, []).append(step)
    assert by_attempt[1] == list(range(1, 7))
    assert by_attempt[2] == list(range(6, by_attempt[2][-1] + 1))
    assert by_attempt[3] == list(range(36, 45))


# --- 7. a full disk -----------------------------------------------------------------------


def _user_namespaces_work() -> bool:
    if shutil.which("unshare") is None:
        return False
    done = subprocess.run(["unshare", "-rm", "true"], capture_output=True, timeout=10)
    return done.returncode == 0


def test_full_checkpoint_disk_fails_the_job_naming_the_file(tmp_path: Path) -> None:
    """checkpoint.uri on a real 200 KiB tmpfs (in a user + mount namespace, with the job
    inside it): the job stops with an error naming the file and the free space, and the
    half-written step never gets a manifest."""
    if not _user_namespaces_work():
        pytest.skip("unshare -rm (user and mount namespaces) is not allowed here")
    disk = tmp_path / "disk"
    disk.mkdir()
    listing = tmp_path / "files-on-disk.txt"
    script = (
        'mount -t tmpfs -o size=200k tmpfs "$0" || exit 99; "$@"; rc=$?; '
        f'find "$0" -type f > {listing}; exit $rc'
    )
    command = [
        "unshare",
        "-rm",
        "sh",
        "-c",
        script,
        str(disk),
        *torchrun_command(tmp_path, *job(2), f"checkpoint.uri={disk}"),
    ]
    done = execute(command, timeout=300)

    assert done.code not in (0, 99), done.stderr[-3000:]
    assert f"cannot write checkpoint file {disk}/" in done.stderr, done.stderr[-3000:]
    assert "bytes free on" in done.stderr and "point checkpoint.uri at a larger disk" in done.stderr
    assert "/step-000000005/" in done.stderr  # the first save, the one that failed
    files = listing.read_text().split()
    assert files and not [f for f in files if f.endswith("manifest.json")]  # never published


# --- 8. a spec that does not match the checkpoint -------------------------------------------


def _tree_hashes(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_resume_with_another_model_is_refused_until_restart(
    shared: SharedRuns, tmp_path: Path
) -> None:
    """A rerun with another model width cannot load the checkpoint: a one-line error that
    names `model` and `--restart`, no traceback; `--restart` then trains a new lineage and
    leaves the old one as it was."""
    whole, out = shared.uninterrupted(2)
    assert whole.code == 0, whole.stderr[-3000:]
    job_dir = copy_of(out, tmp_path)
    (old,) = lineage_dirs(job_dir)
    before = _tree_hashes(old)
    other = [*job(2), "model.args.width=8"]

    refused = deepyard_run(job_dir, *other)

    assert refused.code != 0 and refused.summary == {}
    assert "error:" in refused.stderr and "Traceback" not in refused.stderr
    assert "model=" in refused.stderr and "--restart" in refused.stderr
    assert str(old.name) in refused.stderr  # which checkpoint it refused

    fresh = deepyard_run(job_dir, *other, restart=True)

    assert fresh.code == 0, fresh.stderr[-3000:]
    assert fresh.summary["start_step"] == 0 and fresh.summary["steps"] == MAX_STEPS
    lineages = lineage_dirs(job_dir)
    assert len(lineages) == 2 and old in lineages
    assert _tree_hashes(old) == before
    (new,) = [p for p in lineages if p != old]
    assert manifest_width(new) == 8


def manifest_width(lineage: Path) -> int:
    newest = sorted(lineage.glob("step-*/manifest.json"))[-1]
    return int(json.loads(newest.read_text())["spec"]["model"]["args"]["width"])
