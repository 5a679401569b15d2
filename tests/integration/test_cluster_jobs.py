"""Jobs on an existing Ray cluster through the Ray Jobs API, as a user drives them from
another machine: a real two-node Ray cluster on 127.0.0.1 (`ray start --head` and a second
`ray start --address`, 2 CPUs each) with token authentication, and the `deepyard submit |
jobs list | status | logs | stop` commands as subprocesses.

- A submitted job trains on the cluster; status, list and logs show it.
- SPREAD places one worker on each node.
- A job that does not fit waits, says what it waits for, and starts when room is made.
- A long job is stopped.
- A request without the token, or with another token, is refused with a message that
  says what to fix (CVE-2023-48022: the Jobs API must not run code for anyone).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from deepyard.train.dist import free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(600)]

EXAMPLES = Path(__file__).resolve().parents[2] / "jobs" / "examples"
DEEPYARD = [sys.executable, "-m", "deepyard.cli.main"]


@dataclass(frozen=True)
class Head:
    address: str
    token: str

    def env(self, token: str | None = "cluster's") -> dict[str, str]:
        """A client's environment: the cluster's token, another one, or none at all."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
        env["HOME"] = tempfile.mkdtemp(prefix="dy-home-")  # no ~/.ray/auth_token to find
        env["DEEPYARD_ADDRESS"] = self.address
        if token is not None:
            env["RAY_AUTH_TOKEN"] = self.token if token == "cluster's" else token
        return env


@pytest.fixture(scope="module")
def head() -> Iterator[Head]:
    """A two-node Ray cluster with token authentication, on loopback; stopped by PID."""
    token = secrets.token_hex(16)
    temp = tempfile.mkdtemp(prefix="dy-ray-", dir="/tmp")  # short: Ray's socket paths
    dashboard, gcs = free_port(), free_port()
    env = {
        **os.environ,
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": token,
        # The job's entrypoint runs `python`: this interpreter, with deepyard installed.
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
    }
    ray = [str(Path(sys.executable).parent / "ray"), "start", "--block", "--num-cpus=2"]
    common = ["--node-ip-address=127.0.0.1"]
    head_node = [
        *ray,
        "--head",
        f"--port={gcs}",
        "--dashboard-host=127.0.0.1",
        f"--dashboard-port={dashboard}",
        f"--ray-client-server-port={free_port()}",
        f"--temp-dir={temp}",
        *common,
    ]
    nodes = [_start(head_node, env)]
    found = Head(f"http://127.0.0.1:{dashboard}", token)
    try:
        _wait_until_up(found, nodes[0])
        # Its own temp dir: two nodes sharing one would each clean up the other's
        # runtime-env files (a job's working dir vanished from under its workers).
        second = [*ray, f"--address=127.0.0.1:{gcs}", f"--temp-dir={temp}/node2", *common]
        nodes.append(_start(second, env))
        yield found
    finally:
        for node in reversed(nodes):
            _stop(node)
        shutil.rmtree(temp, ignore_errors=True)


def _start(command: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        command,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its own process group: stopped with everything it started
    )


def _stop(proc: subprocess.Popen[bytes]) -> None:
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)


def _wait_until_up(head: Head, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert proc.poll() is None, "ray start --head exited"
        done = deepyard("jobs", "list", env=head.env())
        if done.returncode == 0:
            return
        time.sleep(2)
    raise AssertionError(f"the cluster's Jobs API never answered: {done.stderr[-2000:]}")


def deepyard(
    *args: str, env: dict[str, str], timeout: int = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*DEEPYARD, *args], capture_output=True, text=True, timeout=timeout, env=env
    )


def submit(head: Head, *overrides: str) -> str:
    sets = [arg for item in overrides for arg in ("--set", item)]
    done = deepyard("submit", str(EXAMPLES / "digits_cnn.yaml"), *sets, env=head.env())
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.strip().splitlines()[-1]


def status_line(head: Head, job_id: str) -> str:
    done = deepyard("status", job_id, env=head.env())
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.strip()


def wait_for(head: Head, job_id: str, states: set[str], timeout_s: float = 400) -> str:
    """The job's state once it is one of `states`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        state = status_line(head, job_id).split(":")[1].split()[0]
        if state in states:
            return state
        time.sleep(2)
    raise AssertionError(f"{job_id} never reached {states}")


def test_a_submitted_job_trains_on_the_cluster_and_shows_in_status_and_logs(
    head: Head, tmp_path: Path
) -> None:
    job_id = submit(head, "training.epochs=null", "training.max_steps=30", f"output_dir={tmp_path}")
    assert re.fullmatch(r"digits-cnn-\d{8}-\d{6}-[0-9a-f]{4}", job_id)
    final = wait_for(head, job_id, {"SUCCEEDED", "FAILED", "STOPPED"})
    logs = deepyard("logs", job_id, env=head.env())
    assert final == "SUCCEEDED", logs.stdout[-3000:]
    assert "accuracy" in logs.stdout and "goodput" in logs.stdout
    followed = deepyard("logs", job_id, "--follow", env=head.env())  # ends with the job
    assert followed.returncode == 0 and "goodput" in followed.stdout
    listed = deepyard("jobs", "list", "--json", env=head.env())
    rows = {row["id"]: row for row in map(json.loads, listed.stdout.splitlines())}
    assert rows[job_id]["status"] == "SUCCEEDED" and rows[job_id]["job"] == "digits-cnn"
    assert job_id in deepyard("jobs", "list", env=head.env()).stdout  # the table, unwrapped
    # It ran here, on the cluster's node, with the spec as validated before submitting.
    (spec,) = tmp_path.glob("digits-cnn/*/spec.yaml")
    assert "max_steps: 30" in spec.read_text()


def test_spread_places_one_worker_on_each_node(head: Head, tmp_path: Path) -> None:
    job_id = submit(
        head,
        "training.epochs=null",
        "training.max_steps=10",
        "resources.placement=SPREAD",
        f"output_dir={tmp_path}",
    )
    assert wait_for(head, job_id, {"SUCCEEDED", "FAILED", "STOPPED"}) == "SUCCEEDED"
    (events,) = tmp_path.glob("digits-cnn/*/events.jsonl")
    records = [json.loads(line) for line in events.read_text().splitlines()]
    (workers,) = [e for e in records if e["type"] == "workers"]
    assert len(set(workers["nodes"])) == 2


def test_a_job_that_does_not_fit_waits_says_why_and_starts_when_room_is_made(
    head: Head, tmp_path: Path
) -> None:
    big = submit(
        head,
        "training.epochs=null",
        "training.max_steps=100000",
        "resources.cpus_per_worker=2",  # 2 x 2 CPUs: the whole cluster
        f"output_dir={tmp_path / 'big'}",
    )
    wait_for_log(head, big, " step ")
    small = submit(head, "training.epochs=null", "training.max_steps=10", f"output_dir={tmp_path}")
    wait_for(head, small, {"RUNNING"})
    deadline = time.monotonic() + 60
    waiting = status_line(head, small)
    while "waiting for resources" not in waiting and time.monotonic() < deadline:
        time.sleep(2)
        waiting = status_line(head, small)
    assert f"{small}: RUNNING (waiting for resources: needs 2 workers x 1 CPU; " in waiting
    assert "cluster has 0 CPU free" in waiting
    assert deepyard("stop", big, env=head.env()).returncode == 0
    assert wait_for(head, small, {"SUCCEEDED", "FAILED", "STOPPED"}) == "SUCCEEDED"


def wait_for_log(head: Head, job_id: str, text: str, timeout_s: float = 300) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if text in deepyard("logs", job_id, env=head.env()).stdout:
            return
        time.sleep(2)
    raise AssertionError(f"{job_id}'s log never showed {text!r}")


def test_stop_ends_a_running_job(head: Head, tmp_path: Path) -> None:
    job_id = submit(
        head, "training.epochs=null", "training.max_steps=100000", f"output_dir={tmp_path}"
    )
    wait_for(head, job_id, {"RUNNING"})
    done = deepyard("stop", job_id, env=head.env())
    assert done.returncode == 0 and "stop requested" in done.stdout
    assert wait_for(head, job_id, {"STOPPED", "FAILED", "SUCCEEDED"}) == "STOPPED"


def test_requests_without_the_clusters_token_are_refused(head: Head) -> None:
    before = job_ids(head)
    missing = deepyard("jobs", "list", env=head.env(token=None))
    assert missing.returncode == 1
    assert "refused the request: no token" in missing.stderr
    assert "Traceback" not in missing.stderr
    wrong = deepyard(
        "submit", str(EXAMPLES / "digits_cnn.yaml"), env=head.env(token="not-the-token")
    )
    assert wrong.returncode == 1
    assert "the token is not this cluster's" in wrong.stderr
    assert job_ids(head) == before  # nothing was submitted


def job_ids(head: Head) -> list[str]:
    listed = deepyard("jobs", "list", "--json", env=head.env())
    assert listed.returncode == 0, listed.stderr[-2000:]
    return [json.loads(line)["id"] for line in listed.stdout.splitlines()]
