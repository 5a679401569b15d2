"""Running a job as a user does under torchrun (`torchrun -m deepyard.train`), for tests:
the exit code, the summary line it prints and its stderr; past the timeout the command
and everything it started are killed."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pyarrow.parquet as pq

from deepyard.train.dist import free_port

TORCHRUN = str(Path(sys.executable).with_name("torchrun"))


@dataclass
class Run:
    """One finished command: exit code, its summary (the last JSON stdout line), stderr,
    and its whole stdout."""

    code: int
    summary: dict[str, Any]
    stderr: str
    stdout: str = ""

    @property
    def run_dir(self) -> Path:
        return Path(self.summary["run_dir"])

    def history(self) -> dict[str, list[Any]]:
        return dict(pq.read_table(self.run_dir / "history.parquet").to_pydict())

    def losses(self) -> dict[int, float]:
        history = self.history()
        return dict(zip(history["step"], history["loss"], strict=True))


def command(
    spec: Path, out: Path, *overrides: str, workers: int = 2, restart: bool = False
) -> list[str]:
    """torchrun on `workers` local ranks, runs and checkpoints under `out`."""
    sets = [f"output_dir={out}", f"resources.num_workers={workers}", *overrides]
    return [
        TORCHRUN,
        "--nproc-per-node",
        str(workers),
        "--master-addr",
        "127.0.0.1",
        "--master-port",
        str(free_port()),
        "-m",
        "deepyard.train",
        "--spec",
        str(spec),
        "--json",
        *(["--restart"] if restart else []),
        *[arg for value in sets for arg in ("--set", value)],
    ]


def execute(argv: list[str], timeout: int) -> Run:
    """Run `argv` to the end; past `timeout`, stop it and everything it started."""
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_tree(proc)
        raise
    lines = [line for line in stdout.splitlines() if line.startswith("{")]
    return Run(proc.returncode, json.loads(lines[-1]) if lines else {}, stderr, stdout)


def kill_tree(proc: subprocess.Popen[str]) -> None:
    """SIGKILL a command we started and its descendants (an embedded Ray, torchrun's ranks)."""
    try:
        family = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        family = []
    for member in family:
        with contextlib.suppress(psutil.NoSuchProcess):
            member.kill()
    psutil.wait_procs(family, timeout=30)
    proc.communicate(timeout=30)
