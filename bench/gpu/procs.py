"""The GPU check's legs as processes: each in its own process group, its output in a log,
stopped with Ctrl-C (then SIGKILL) when it runs past its time or the check is interrupted."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any


def run_leg(
    command: list[str], cwd: Path, log: Path, timeout_s: float
) -> tuple[int | None, str, float]:
    """(exit code or None on timeout, stdout, seconds); stderr (and stdout) go to `log`."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ADDRESS", None)  # an embedded Ray, never someone's cluster
    started = time.perf_counter()
    with log.open("w") as err:
        err.write("$ " + " ".join(command) + "\n")
        err.flush()
        proc = subprocess.Popen(
            command,
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            start_new_session=True,  # its own process group: stopped as a whole on timeout
        )
        try:
            stdout, _ = proc.communicate(timeout=timeout_s)
            code: int | None = proc.returncode
        except subprocess.TimeoutExpired:
            stdout, code = stop(proc), None
        except KeyboardInterrupt:  # run.sh's timeout, or Ctrl-C: stop the leg, then go
            err.write(stop(proc) + "\ngpt2_check: interrupted\n")
            raise
        err.write(stdout)
    return code, stdout, time.perf_counter() - started


def stop(proc: subprocess.Popen[str]) -> str:
    """Ctrl-C to the leg's process group (deepyard run then stops its workers and Ray),
    SIGKILL if it is still there 30 s later; what it printed."""
    os.killpg(proc.pid, signal.SIGINT)
    try:
        stdout, _ = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, _ = proc.communicate()
    return stdout


def last_json(stdout: str) -> dict[str, Any] | None:
    """The last line of `stdout` that is a JSON object (the legs print their result so)."""
    for line in reversed(stdout.splitlines()):
        if line.startswith("{"):
            try:
                found: dict[str, Any] = json.loads(line)
                return found
            except json.JSONDecodeError:
                continue
    return None
