"""What checkpoints cost and how fast a job comes back: the issue's three figures, in one run.

  (1) write:    bytes published / background write time of a synchronous save, over the
                disk's own bandwidth (`dd ... conv=fsync` of the same size, in the same folder)
  (2) blocking: mean seconds the training thread is blocked per save, async over sync
  (3) recovery: a worker SIGKILLed under `deepyard run` (local Ray, failure.max_restarts=1):
                detection, restart, restore and first step after the failure, steps redone

How each is measured, and why so:

- (1) and (2) run the real loop the way users run it, as subprocesses: the same job twice,
  `torchrun --nproc-per-node 2 -m deepyard.train` (2 workers, ZeRO-2, an `mlp` whose
  checkpoint with AdamW state is ~300 MB), with `checkpoint.async=false`, then `true`;
  torchrun rather than Ray because the save path is the same and it starts faster. The
  summary keeps only totals, so each entry point is started through this script
  (`--tee`), which wraps `RunSession.emit` to copy every event to a JSONL file; nothing
  else changes. `checkpoint` events give `blocked_s` as the training thread saw it;
  `checkpoint_saved` events give `write_s` (rank 0's background thread: torch.save + fsync,
  sha256, rank record, waiting for rank 1's record, manifest) and `size_bytes` (every
  rank's files).
- (1) takes `write_s` from the synchronous run, where no training competes with the
  writers for the 2 CPUs, against the median of three dd runs in the checkpoint folder
  (before the first job and after each save job), each the size of a checkpoint.
- (2) leaves out the save at the last step, which waits for its write in both modes.
- (3) runs `deepyard run` (checkpoint.async=true) with fault `crash`: the worker SIGKILLs
  itself before step 6, two steps after the save at step 3. Detection, restore and steps
  redone are the summary's `recoveries`; the other phases are the second attempt's phase
  events, counted from the failed attempt's last step event (the kill follows it at once).
- `--quick`: a ~77 MB checkpoint and no separate async job; (2)'s async side is then the
  recovery run's saves (same job and saving code, launched by Ray instead of torchrun).

Usage: .venv/bin/python bench/checkpoint.py [--quick] [--json]
Writes bench/out/checkpoint.json; subprocess logs go to bench/out/logs/checkpoint-*.log.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from deepyard.train.dist import free_port
from overhead import BIN, ROOT, launch  # bench/overhead.py: this folder is on sys.path

GOAL_WRITE_RATIO = 0.7  # published bytes/s over the disk's dd bandwidth, at least
GOAL_BLOCKED_RATIO = 0.1  # async blocked_s over sync blocked_s, at most
GOAL_RECOVERY_S = 30.0  # failure to the first training step of the next attempt, under
JOB = ROOT / "jobs/examples/digits_cnn.yaml"  # 2 workers, ZeRO-2; the model is replaced
SIZES = {  # hidden width, steps; depth 3: ~300 MB (default) or ~77 MB (--quick) checkpoints
    False: {"hidden": 3072, "steps": 10},
    True: {"hidden": 1536, "steps": 7},
}
EVERY_STEPS = 3
CRASH_STEP = 6  # before step 6: two steps after the save at step 3 (whose write is done)
Result = dict[str, Any]


def tee(argv: list[str]) -> int:
    """`--tee EVENTS train|cli ARGS`: run an entry point, copying each run event to EVENTS."""
    from deepyard.telemetry import session

    events_path, entry, rest = argv[0], argv[1], argv[2:]
    sink = open(events_path, "a", buffering=1)  # noqa: SIM115  (open for the process's life)
    emit = session.RunSession.emit

    def teed(self: Any, event: dict[str, Any]) -> None:
        sink.write(json.dumps(event, default=float) + "\n")
        emit(self, event)

    session.RunSession.emit = teed  # type: ignore[method-assign]
    if entry == "train":
        from deepyard.train.__main__ import main as train_main

        return train_main(rest)
    from deepyard.cli.main import main as cli_main

    sys.argv = ["deepyard", *rest]
    cli_main()
    return 0


def job_sets(tmp: Path, name: str, hidden: int, steps: int) -> list[str]:
    return [
        "model.name=mlp",
        f"model.args={{hidden: {hidden}, depth: 3}}",
        f"training.max_steps={steps}",
        "training.epochs=null",
        f"output_dir={tmp / 'runs'}",
        f"checkpoint.uri={tmp / 'checkpoints' / name}",
        f"checkpoint.every_steps={EVERY_STEPS}",
    ]


def run_teed(entry: list[str], tail: list[str], name: str, logs: Path, timeout_s: float) -> Result:
    """Run `entry` (a launcher prefix) on this script's --tee; the summary plus its events."""
    events = logs / f"checkpoint-{name}.events.jsonl"
    events.unlink(missing_ok=True)
    script = [str(Path(__file__).resolve()), "--tee", str(events)]
    summary = launch([*entry, *script, *tail], logs / f"checkpoint-{name}.log", timeout_s)
    summary["events"] = [json.loads(line) for line in events.read_text().splitlines()]
    return summary


def save_run(mode: str, sets: list[str], logs: Path, timeout_s: float) -> Result:
    """The job under torchrun (2 workers), checkpoint.async=true|false; per-save figures."""
    rdzv = f"--master-addr 127.0.0.1 --master-port {free_port()}".split()
    entry = [str(BIN / "torchrun"), "--nproc-per-node", "2", *rdzv]
    sets = [*sets, f"checkpoint.async={'true' if mode == 'async' else 'false'}"]
    tail = ["train", "--spec", str(JOB), "--json", *(a for s in sets for a in ("--set", s))]
    summary = run_teed(entry, tail, mode, logs, timeout_s)
    return {"launcher": "torchrun", **save_figures(summary)}


def save_figures(summary: Result) -> Result:
    """Per-save figures from a run's events; `blocked_s` leaves out the last step's save."""
    last, events = summary["steps"], summary["events"]
    saves = [e for e in events if e["type"] == "checkpoint"]
    saved = [e for e in events if e["type"] == "checkpoint_saved"]
    return {
        "steps": last,
        "samples_per_s": summary["samples_per_s"],  # step time only; saves left out
        "blocked_s": [e["blocked_s"] for e in saves if e["step"] < last],
        "blocked_s_last": next(e["blocked_s"] for e in saves if e["step"] == last),
        "write_s": [e["write_s"] for e in saved],
        "size_bytes": saved[-1]["size_bytes"],
        "summary_blocked_s_mean": summary["checkpoints"]["blocked_s_mean"],
        "num_parameters": summary.get("num_parameters"),
    }


def disk_write(folder: Path, size_bytes: int) -> Result:
    """`dd if=/dev/zero bs=4M conv=fsync` of about `size_bytes` into `folder`: bytes/s."""
    target = folder / "dd.bin"
    count = max(1, -(-size_bytes // (4 << 20)))
    cmd = ["dd", "if=/dev/zero", f"of={target}", "bs=4M", f"count={count}", "conv=fsync"]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    finally:
        target.unlink(missing_ok=True)
    # "402653184 bytes (403 MB, 384 MiB) copied, 2.33908 s, 172 MB/s"
    match = re.search(r"^(\d+) bytes .* copied, ([\d.]+) s", done.stderr, re.MULTILINE)
    if match is None:
        sys.exit(f"cannot read dd's output: {done.stderr!r}")
    size, seconds = int(match.group(1)), float(match.group(2))
    return {"bytes": size, "seconds": seconds, "bytes_per_s": size / seconds}


def recovery_run(sets: list[str], crash_rank: int, logs: Path, timeout_s: float) -> Result:
    """`deepyard run` on local Ray; a worker SIGKILLs itself; the recovery and its phases."""
    fault = f"faults=[{{kind: crash, step: {CRASH_STEP}, rank: {crash_rank}}}]"
    sets = [*sets, "failure.max_restarts=1", fault]
    tail = ["cli", "run", str(JOB), "--json", *(a for s in sets for a in ("--set", s))]
    summary = run_teed([sys.executable], tail, "recovery", logs, timeout_s)
    if not summary.get("recoveries"):
        sys.exit(f"the recovery run recorded no recovery; its log: {logs}")
    recovery = summary["recoveries"][0]
    saves = {"launcher": "deepyard run", **save_figures(summary)}
    return {**recovery, **recovery_phases(summary["events"], recovery), "saves": saves}


def recovery_phases(events: list[Result], recovery: Result) -> Result:
    """Seconds from the failure to the next attempt's first step, phase by phase."""
    first = [e for e in events if e.get("attempt", 1) == 1 and "t" in e]
    second = [e for e in events if e.get("attempt") == 2 and "t" in e]
    failed_t = max(e["t"] for e in first if e["type"] == "step")  # the kill follows at once
    marks = [("detect", max(e["t"] for e in first) + recovery["detect_s"])]
    marks += [(e["name"], e["t"]) for e in second if e["type"] == "phase"]
    steps = {e["step"]: e["t"] for e in second if e["type"] == "step"}
    marks.append(("first_step", min(steps.values())))
    phases, previous = {}, failed_t
    for name, t in marks:
        phases[name] = round(t - previous, 3)
        previous = t
    failed_step = recovery["resumed_step"] + recovery["steps_redone"]
    return {
        "phases_s": phases,
        "failure_to_first_step_s": round(min(steps.values()) - failed_t, 3),
        "failure_to_failed_step_s": round(steps.get(failed_step, float("nan")) - failed_t, 3),
    }


def median_disk(samples: list[Result]) -> float:
    return float(statistics.median(s["bytes_per_s"] for s in samples))


def measure(args: argparse.Namespace, tmp: Path, logs: Path, say: Console) -> Result:
    """Every figure: dd, sync job, dd, async job (not with --quick), dd, recovery job."""
    size = SIZES[args.quick]
    folder = tmp / "checkpoints"
    folder.mkdir(parents=True)
    estimate = 16 * 2 * size["hidden"] ** 2  # fp32 weights, master copy, 2 Adam moments
    say.print(f"disk: dd of {estimate / 1e6:.0f} MB into {folder} ...")
    disk = [disk_write(folder, estimate)]
    say.print("(1)+(2) torchrun, 2 workers, checkpoint.async=false ...")
    runs = {"sync": save_run("sync", job_sets(tmp, "sync", **size), logs, args.timeout)}
    disk.append(disk_write(folder, runs["sync"]["size_bytes"]))
    if not args.quick:
        say.print("(2) torchrun, 2 workers, checkpoint.async=true ...")
        runs["async"] = save_run("async", job_sets(tmp, "async", **size), logs, args.timeout)
        disk.append(disk_write(folder, runs["sync"]["size_bytes"]))
    say.print(
        f"(3) deepyard run on local Ray (checkpoint.async=true), rank {args.crash_rank} "
        f"SIGKILLed before step {CRASH_STEP} ..."
    )
    sets = job_sets(tmp, "recovery", **size)
    recovery = recovery_run(sets, args.crash_rank, logs, args.timeout)
    if args.quick:  # (2)'s async side: the recovery run's saves (same job, launched by Ray)
        runs["async"] = recovery["saves"]
    return {"disk": disk, **runs, "recovery": recovery}


def figures(raw: Result) -> Result:
    """The three figures and their ratios from the measurements."""
    sync, asyn = raw["sync"], raw["async"]
    disk_bps = median_disk(raw["disk"])
    write_bps = sync["size_bytes"] / statistics.mean(sync["write_s"])
    sync_save_bps = sync["size_bytes"] / statistics.mean(sync["blocked_s"])
    blocked_sync = statistics.mean(sync["blocked_s"])
    blocked_async = statistics.mean(asyn["blocked_s"])
    recovery = raw["recovery"]
    return {
        "checkpoint_bytes": sync["size_bytes"],
        "disk_bytes_per_s": round(disk_bps),
        "write_bytes_per_s": round(write_bps),
        "sync_save_bytes_per_s": round(sync_save_bps),
        "ratio_write_disk": round(write_bps / disk_bps, 3),
        "ratio_sync_save_disk": round(sync_save_bps / disk_bps, 3),
        "blocked_s_mean": {"sync": round(blocked_sync, 4), "async": round(blocked_async, 4)},
        "ratio_blocked_async_sync": round(blocked_async / blocked_sync, 4),
        "failure_to_first_step_s": recovery["failure_to_first_step_s"],
    }


def render(result: Result, console: Console) -> None:
    fig, raw = result["figures"], result["raw"]
    ok = {True: "[green]ok[/]", False: "[red]MISSED[/]"}
    mb = 1e6
    table = Table(title=f"checkpoint of {fig['checkpoint_bytes'] / mb:.0f} MB, 2 workers, ZeRO-2")
    table.add_column("")
    for mode in ("sync", "async"):
        table.add_column(f"{mode} ({raw[mode]['launcher']})", justify="right")

    def cells(key: str, digits: int = 3) -> list[str]:
        return [", ".join(f"{v:.{digits}f}" for v in raw[m][key]) for m in ("sync", "async")]

    table.add_row("blocked_s per save", *cells("blocked_s"))
    table.add_row(
        "blocked_s, last step",
        *(f"{raw[m]['blocked_s_last']:.3f}" for m in ("sync", "async")),
    )
    table.add_row(
        "summary blocked_s_mean",
        *(f"{raw[m]['summary_blocked_s_mean']:.3f}" for m in ("sync", "async")),
    )
    table.add_row("write_s per save", *cells("write_s"))
    table.add_row("samples/s", *(f"{raw[m]['samples_per_s']:.1f}" for m in ("sync", "async")))
    console.print(table)
    disks = ", ".join(f"{d['bytes_per_s'] / mb:.0f}" for d in raw["disk"])
    console.print(f"disk (dd conv=fsync, MB/s): {disks}; median {fig['disk_bytes_per_s'] / mb:.0f}")
    ratio = fig["ratio_write_disk"]
    console.print(
        f"(1) write: {fig['write_bytes_per_s'] / mb:.0f} MB/s published / disk = {ratio:.2f} "
        f"(goal >= {GOAL_WRITE_RATIO}) {ok[ratio >= GOAL_WRITE_RATIO]}; whole synchronous save "
        f"{fig['sync_save_bytes_per_s'] / mb:.0f} MB/s = {fig['ratio_sync_save_disk']:.2f}"
    )
    ratio = fig["ratio_blocked_async_sync"]
    blocked = fig["blocked_s_mean"]
    console.print(
        f"(2) blocked per save: async {blocked['async']:.3f} s / sync {blocked['sync']:.3f} s "
        f"= {ratio:.3f} (goal <= {GOAL_BLOCKED_RATIO}) {ok[ratio <= GOAL_BLOCKED_RATIO]}"
    )
    render_recovery(raw["recovery"], console, ok)


def render_recovery(rec: Result, console: Console, ok: dict[bool, str]) -> None:
    table = Table(title="(3) recovery after SIGKILL", caption=rec["cause"])
    table.add_column("phase (since the failed rank's last step)")
    table.add_column("s", justify="right")
    for name, seconds in rec["phases_s"].items():
        table.add_row(name, f"{seconds:.2f}")
    table.add_row("[bold]failure → first step[/]", f"{rec['failure_to_first_step_s']:.2f}")
    console.print(table)
    total = rec["failure_to_first_step_s"]
    console.print(
        f"(3) detect {rec['detect_s']:.2f} s, restore {rec['restore_s']:.2f} s, failure → first "
        f"step {total:.1f} s (goal < {GOAL_RECOVERY_S:g} s) {ok[total < GOAL_RECOVERY_S]}; "
        f"resumed at step {rec['resumed_step']}, {rec['steps_redone']} steps redone, back at the "
        f"failed step after {rec['failure_to_failed_step_s']:.1f} s"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="~77 MB checkpoints, fewer steps")
    parser.add_argument(
        "--crash-rank", type=int, default=1, help="the rank SIGKILLed in (3); 0 or 1"
    )
    parser.add_argument("--json", action="store_true", help="the result as JSON on stdout")
    parser.add_argument("--timeout", type=float, default=600, help="seconds per subprocess")
    parser.add_argument("--out", type=Path, default=ROOT / "bench/out/checkpoint.json")
    args = parser.parse_args(argv)
    logs = args.out.parent / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    console = Console(stderr=args.json)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="deepyard-bench-ckpt-") as tmp:
        raw = measure(args, Path(tmp), logs, Console(stderr=True))
    result: Result = {
        "quick": args.quick,
        "goals": {
            "ratio_write_disk": f">= {GOAL_WRITE_RATIO}",
            "ratio_blocked_async_sync": f"<= {GOAL_BLOCKED_RATIO}",
            "failure_to_first_step_s": f"< {GOAL_RECOVERY_S}",
        },
        "figures": figures(raw),
        "raw": raw,
        "bench_s": round(time.perf_counter() - started, 1),
        "machine": {"cpus": os.cpu_count()},
    }
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    render(result, console)
    console.print(f"wrote {args.out} in {result['bench_s']:.0f} s")
    if args.json:
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--tee"]:
        sys.exit(tee(sys.argv[2:]))
    sys.exit(main())
