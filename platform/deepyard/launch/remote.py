"""Jobs on an existing Ray cluster, through the Ray Jobs API: submit, list, status, logs, stop.

`deepyard submit` packages the validated, resolved spec into a working directory that Ray
uploads with the job; on the cluster the entrypoint is `deepyard run job.yaml --address
auto`, so the job runs exactly as it does locally (same gang, checkpoints, metrics).

Authentication: the cluster runs with Ray's token authentication. The token comes from
`--token-file`, else $RAY_AUTH_TOKEN, else $RAY_AUTH_TOKEN_PATH, else ~/.ray/auth_token
(Ray's own order), and is sent as a bearer token. A refused request names what to fix.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deepyard.errors import DeepyardError
from deepyard.spec import JobSpec, spec_hash, to_yaml
from deepyard.telemetry.record import new_run_id

SPEC_FILE = "job.yaml"
DEFAULT_TOKEN_PATH = Path.home() / ".ray" / "auth_token"
ENTRYPOINT = f"python -m deepyard.cli.main run {SPEC_FILE} --address auto"
AGENT_WAIT_S = 60.0  # how long a submission waits for a just-started head's job agent


class ClusterError(DeepyardError):
    """The cluster cannot be reached, or refused the request."""


class ClusterUsageError(ClusterError):
    """The command cannot know which cluster, or with what token: the user must say."""

    exit_code = 2


@dataclass(frozen=True)
class JobRow:
    id: str
    status: str
    job: str
    entrypoint: str
    message: str
    start_s: float | None
    end_s: float | None


def find_token(token_file: Path | None = None) -> str | None:
    """The cluster token, from the first place that has one (Ray's order)."""
    if token_file is not None:
        if not token_file.is_file():
            raise ClusterUsageError(f"--token-file {token_file}: no such file")
        return token_file.read_text().strip() or None
    if os.environ.get("RAY_AUTH_TOKEN"):
        return os.environ["RAY_AUTH_TOKEN"].strip()
    path = os.environ.get("RAY_AUTH_TOKEN_PATH")
    candidate = Path(path) if path else DEFAULT_TOKEN_PATH
    return candidate.read_text().strip() or None if candidate.is_file() else None


def connect(address: str | None, token_file: Path | None) -> Cluster:
    """The cluster at `address` (or $DEEPYARD_ADDRESS), with the token found for it."""
    return Cluster(address, find_token(token_file))


class Cluster:
    """One Ray cluster's Jobs API at `address` (http://HEAD:8265)."""

    def __init__(self, address: str | None, token: str | None) -> None:
        address = address or os.environ.get("DEEPYARD_ADDRESS") or os.environ.get("RAY_ADDRESS")
        if not address:
            raise ClusterUsageError(
                "no cluster address: pass --address http://HEAD:8265 (the Ray dashboard "
                "of the cluster), or set DEEPYARD_ADDRESS"
            )
        if "://" not in address:
            address = f"http://{address}"
        self.address = address
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.client = self._connect(headers)

    def _connect(self, headers: dict[str, str]) -> Any:
        from ray.job_submission import JobSubmissionClient

        try:
            return JobSubmissionClient(self.address, headers=headers)
        except Exception as exc:  # Ray raises ConnectionError / RuntimeError with HTTP text
            raise self._explain(exc) from None

    def _explain(self, exc: Exception) -> ClusterError:
        text = str(exc)
        if "401" in text or "Missing authentication token" in text:
            return ClusterError(
                f"{self.address} refused the request: no token. The cluster runs with "
                "token authentication; pass --token-file FILE or set RAY_AUTH_TOKEN to the "
                "cluster's token (`ray get-auth-token` on the head prints it)"
            )
        if "403" in text or "Invalid authentication token" in text:
            return ClusterError(
                f"{self.address} refused the request: the token is not this cluster's. "
                "Use the cluster's token (`ray get-auth-token` on the head prints it)"
            )
        if "Connection refused" in text or "Failed to connect" in text or "Max retries" in text:
            return ClusterError(
                f"cannot reach a Ray dashboard at {self.address}; check the address (the "
                "head's dashboard port, 8265 by default) and that the cluster is up"
            )
        return ClusterError(f"{self.address}: {text.strip().splitlines()[-1] if text else exc}")

    def submit(self, spec: JobSpec, working_dir: Path | None = None) -> str:
        """Upload the resolved spec (and `working_dir`, if given) and start the job."""
        job_id = f"{spec.name}-{new_run_id()}"
        with tempfile.TemporaryDirectory(prefix="deepyard-submit-") as tmp:
            package = Path(tmp) / "package"
            if working_dir is not None:
                shutil.copytree(working_dir, package, ignore=_IGNORED)
            else:
                package.mkdir()
            header = f"submitted by deepyard as {job_id}, spec hash {spec_hash(spec)}"
            (package / SPEC_FILE).write_text(to_yaml(spec, header))
            deadline = time.monotonic() + AGENT_WAIT_S
            while True:
                try:
                    return str(
                        self.client.submit_job(
                            entrypoint=ENTRYPOINT,
                            submission_id=job_id,
                            runtime_env={"working_dir": str(package)},
                            metadata={"deepyard_job": spec.name, "spec_hash": spec_hash(spec)},
                        )
                    )
                except Exception as exc:
                    # A head that has just started answers before its job agent is up.
                    if "No available agent" not in str(exc) or time.monotonic() > deadline:
                        raise self._explain(exc) from None
                    time.sleep(2.0)

    def jobs(self) -> list[JobRow]:
        try:
            details = self.client.list_jobs()
        except Exception as exc:
            raise self._explain(exc) from None
        rows = [_row(d) for d in details]
        return sorted(rows, key=lambda r: r.start_s or 0.0)

    def status(self, job_id: str) -> JobRow:
        """The job's state; a running job still waiting for its gang says what it needs."""
        row = self._info(job_id)
        if row.status == "FAILED":  # deepyard's own error, not "entrypoint failed"
            error = _error_line(self._log_text(job_id))
            return dataclasses.replace(row, message=error) if error else row
        if row.status != "RUNNING":
            return row
        waiting = _waiting_line(self._log_text(job_id))
        return dataclasses.replace(row, message=waiting) if waiting else row

    def _info(self, job_id: str) -> JobRow:
        """The job's record; an unknown id is a clear error."""
        try:
            return _row(self.client.get_job_info(job_id))
        except Exception as exc:
            if "does not exist" in str(exc) or "404" in str(exc):
                raise ClusterError(
                    f"no job {job_id} on {self.address}; `deepyard jobs list` shows the ids"
                ) from None
            raise self._explain(exc) from None

    def logs(self, job_id: str) -> str:
        """The job's whole log."""
        self._info(job_id)  # a clear error for an unknown id
        return self._log_text(job_id)

    def _log_text(self, job_id: str) -> str:
        try:
            return str(self.client.get_job_logs(job_id))
        except Exception as exc:
            raise self._explain(exc) from None

    def follow(self, job_id: str) -> Iterator[str]:
        """The job's log as it grows, until the job ends."""
        import asyncio

        self._info(job_id)
        stream = self.client.tail_job_logs(job_id)
        loop = asyncio.new_event_loop()
        try:
            while True:
                try:
                    yield loop.run_until_complete(stream.__anext__())
                except StopAsyncIteration:
                    return
        finally:
            loop.close()

    def stop(self, job_id: str) -> bool:
        self._info(job_id)
        try:
            return bool(self.client.stop_job(job_id))
        except Exception as exc:
            raise self._explain(exc) from None


def _error_line(logs: str) -> str | None:
    """The error the job's `deepyard run` ended with (its last `error: ...` line)."""
    for line in reversed(logs.strip().splitlines()[-200:]):
        if line.startswith("error: "):
            return line.removeprefix("error: ").strip()
    return None


def _waiting_line(logs: str) -> str | None:
    """The last log line, if it says the job waits for resources (WorkerGroup's note)."""
    lines = [line for line in logs.splitlines() if line.strip()]
    if lines and "waiting for resources:" in lines[-1]:
        return lines[-1][lines[-1].index("waiting for resources:") :]
    return None


def _row(info: Any) -> JobRow:
    metadata = info.metadata or {}
    return JobRow(
        id=info.submission_id or info.job_id or "?",
        status=str(getattr(info.status, "value", info.status)),
        job=metadata.get("deepyard_job", ""),
        entrypoint=info.entrypoint,
        message=(info.message or "").strip().splitlines()[0] if info.message else "",
        start_s=info.start_time / 1000 if info.start_time else None,
        end_s=info.end_time / 1000 if info.end_time else None,
    )


_IGNORED = shutil.ignore_patterns(".git", ".venv", "__pycache__", "runs", ".cache", "*.pyc")
