"""Errors by who must act. The CLI prints DeepyardError subclasses without a traceback.

Boundaries (Ray, DeepSpeed, pyarrow) map their exceptions into these, so a user never
reads a stack trace for a mistake they can fix.
"""

from __future__ import annotations


class DeepyardError(Exception):
    """Base of every error deepyard raises on purpose."""

    exit_code = 1


class SpecError(DeepyardError):
    """The job spec (or a command-line override) is wrong: the user must fix it.

    Each message names the field, the bad value and the fix.
    """

    exit_code = 2

    def __init__(self, problems: list[str] | str, source: str | None = None) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        self.source = source
        head = f"invalid job spec {source}" if source else "invalid job spec"
        body = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"{head}:\n{body}")


class DataError(DeepyardError):
    """Input data is missing or malformed: names the file, the column and the fix."""

    exit_code = 2


class RetryableError(DeepyardError):
    """A failure that a restart may cure (a lost worker, a lost node)."""


class ClusterShrunk(DeepyardError):
    """A node was lost and the cluster left cannot hold the job's gang: names the node."""


class TrainingError(DeepyardError):
    """Training itself failed on a worker; carries the worker's own error once."""

    def __init__(self, message: str, rank: int | None = None, worker_traceback: str = "") -> None:
        self.rank = rank
        self.worker_traceback = worker_traceback
        where = f"worker rank {rank}" if rank is not None else "a worker"
        super().__init__(f"training failed on {where}: {message}")


class CheckpointError(DeepyardError):
    """A checkpoint cannot be written, read or trusted: names the location and the fix."""
