"""Decisions all ranks must take at the same step: stop (preemption) and time-based saves.

Each step boundary starts a tiny all-reduce (MAX) of [stop requested, save due] on a
gloo group of its own and acts on the previous boundary's result, so every rank
decides the same thing at the same step and the latency hides behind one step.
Also: injected faults (`faults:` in the spec), which happen before a chosen step.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from deepyard.spec import FaultSpec, JobSpec


@dataclass(frozen=True)
class Decision:
    stop: bool = False
    save: bool = False


class Control:
    """This rank's end of the step-boundary agreement."""

    def __init__(self, spec: JobSpec, rank: int, world_size: int, stop: threading.Event) -> None:
        self.rank, self.stop_requested = rank, stop
        self.every_s = (spec.checkpoint.every_minutes or 0) * 60 or None
        self.last_save = time.monotonic()
        self._group = dist.new_group(backend="gloo") if world_size > 1 else None
        self._flags = torch.zeros(2)
        self._work: Any = None

    def after_step(self) -> Decision:
        """This boundary's agreed decision (one step late when there are peers)."""
        flags = torch.tensor(
            [float(self.stop_requested.is_set()), float(self.rank == 0 and self._due())]
        )
        if self._group is None:
            return self._decide(flags)
        agreed = None
        if self._work is not None:
            self._work.wait()
            agreed = self._flags
        self._flags = flags
        self._work = dist.all_reduce(
            self._flags, op=dist.ReduceOp.MAX, group=self._group, async_op=True
        )
        return Decision() if agreed is None else self._decide(agreed)

    def saved(self) -> None:
        self.last_save = time.monotonic()

    def close(self) -> None:
        if self._work is not None:
            self._work.wait()
            self._work = None

    def _due(self) -> bool:
        return self.every_s is not None and time.monotonic() - self.last_save >= self.every_s

    @staticmethod
    def _decide(flags: torch.Tensor) -> Decision:
        return Decision(stop=bool(flags[0] > 0), save=bool(flags[1] > 0))


class Faults:
    """Injected faults for this rank and attempt (chaos testing)."""

    def __init__(self, faults: list[FaultSpec], rank: int, attempt: int, job_pid: int) -> None:
        self.by_step = {f.step: f for f in faults if f.rank == rank and f.attempt == attempt}
        self.job_pid = job_pid

    def before(self, step: int) -> None:
        fault = self.by_step.get(step)
        if fault is None:
            return
        if fault.kind == "crash":
            os.kill(os.getpid(), signal.SIGKILL)
        elif fault.kind == "hang":
            while True:
                time.sleep(3600)
        elif fault.kind == "sigterm":
            os.kill(self.job_pid, signal.SIGTERM)
        else:
            raise RuntimeError(f"injected fault: error before step {step} (faults in the spec)")
