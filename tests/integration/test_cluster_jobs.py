"""Jobs on an existing Ray cluster through the Ray Jobs API, as a user drives them from
another machine: a real two-node Ray cluster on 127.0.0.1 (`ray start --head` and a second
`ray start --address`, 2 CPUs and 2 `fake_gpu` each, a custom resource standing in for
GPUs) with token authentication, and the `deepyard submit | jobs list | status | logs |
stop` commands as subprocesses.

- A submitted job trains on the cluster; status, list and logs show it.
- SPREAD places one worker on each node.
- A job that does not fit waits, says what it waits for, and starts when room is made.
- Of two waiting jobs, the higher priority starts first.
- A node killed mid-job: the job resumes from its checkpoint on the node left if its gang
  fits there, and otherwise fails naming the lost node (it never hangs).
- A long job is stopped.
- A request without the token, or with another token, is refused with a message that
  says what to fix (CVE-2023-48022: the Jobs API must not run code for anyone).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from deepyard.testing.cluster import LocalCluster

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
def cluster() -> Iterator[LocalCluster]:
    """Two nodes, 2 CPUs and 2 `fake_gpu` each (a custom resource standing in for GPUs),
    with token authentication, on loopback; stopped by PID."""
    found = LocalCluster(cpus=2, resources={"fake_gpu": 2})
    try:
        found.start_node(0)
        _wait_until_up(Head(found.address, found.token), found.nodes[0])
        found.start_node(1)
        found.wait_for_nodes(2)
        yield found
    finally:
        found.stop()


@pytest.fixture(scope="module")
def head(cluster: LocalCluster) -> Head:
    return Head(cluster.address, cluster.token)


def _wait_until_up(head: Head, proc: subprocess.Popen[bytes] | None) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert proc is not None and proc.poll() is None, "ray start --head exited"
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
        "resources.custom={fake_gpu: 2}",  # 2 workers x 2: every fake GPU of the cluster
        f"output_dir={tmp_path / 'big'}",
    )
    wait_for_log(head, big, " step ")
    small = submit(
        head,
        "training.epochs=null",
        "training.max_steps=10",
        "resources.custom={fake_gpu: 1}",
        f"output_dir={tmp_path}",
    )
    waiting = wait_for_status(head, small, "waiting for resources")
    assert f"{small}: RUNNING (waiting for resources: needs 2 fake_gpu (2 workers x 1), " in (
        waiting
    )
    assert "cluster has 0 free; needs 2 CPU (2 workers x 1), cluster has 2 free" in waiting
    assert deepyard("stop", big, env=head.env()).returncode == 0
    assert wait_for(head, small, {"SUCCEEDED", "FAILED", "STOPPED"}) == "SUCCEEDED"


def test_the_higher_priority_job_starts_first_when_room_is_made(head: Head, tmp_path: Path) -> None:
    whole = ("resources.custom={fake_gpu: 2}", "training.epochs=null")
    busy = submit(head, *whole, "training.max_steps=100000", f"output_dir={tmp_path / 'busy'}")
    wait_for_log(head, busy, " step ")
    low = submit(head, *whole, "name=low", "training.max_steps=10", f"output_dir={tmp_path}")
    wait_for_status(head, low, "waiting for resources")
    high = submit(
        head, *whole, "name=high", "priority=10", "training.max_steps=10", f"output_dir={tmp_path}"
    )
    wait_for_status(head, high, "waiting for resources")
    # The low one now waits behind the high one (its note repeats every 15 s).
    behind = wait_for_status(head, low, "behind 1 deepyard job(s) in the queue: high")
    assert "behind" not in status_line(head, high)
    assert deepyard("stop", busy, env=head.env()).returncode == 0
    for job_id in (high, low):
        assert wait_for(head, job_id, {"SUCCEEDED", "FAILED", "STOPPED"}) == "SUCCEEDED", behind
    reserved = {name: phase_t(tmp_path, name, "resources_reserved") for name in ("low", "high")}
    assert reserved["high"] < reserved["low"]


def phase_t(output_dir: Path, job: str, phase: str) -> float:
    (events,) = output_dir.glob(f"{job}/*/events.jsonl")
    for line in events.read_text().splitlines():
        event = json.loads(line)
        if event["type"] == "phase" and event["name"] == phase:
            return float(event["t"])
    raise AssertionError(f"{job} has no {phase} phase")


def wait_for_status(head: Head, job_id: str, text: str, timeout_s: float = 90) -> str:
    """The job's status line once it contains `text`."""
    deadline = time.monotonic() + timeout_s
    line = status_line(head, job_id)
    while text not in line:
        assert time.monotonic() < deadline, f"{job_id}'s status never said {text!r}: {line}"
        time.sleep(2)
        line = status_line(head, job_id)
    return line


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


def events_of(output_dir: Path, job: str = "digits-cnn") -> list[dict[str, object]]:
    found = list(output_dir.glob(f"{job}/*/events.jsonl"))
    if not found:
        return []
    return [json.loads(line) for line in found[0].read_text().splitlines() if line.strip()]


def wait_for_event(output_dir: Path, kind: str, timeout_s: float = 300) -> None:
    deadline = time.monotonic() + timeout_s
    while not any(e["type"] == kind for e in events_of(output_dir)):
        assert time.monotonic() < deadline, f"no {kind} event in {output_dir}"
        time.sleep(1)


@pytest.fixture
def second_node_back(cluster: LocalCluster) -> Iterator[None]:
    """A test that kills the second node gets it back before the next test."""
    yield
    if cluster.nodes[1] is None:
        cluster.start_node(1)
    cluster.wait_for_nodes(2)


def test_a_lost_node_job_resumes_on_the_node_left_when_the_gang_fits(
    cluster: LocalCluster, head: Head, tmp_path: Path, second_node_back: None
) -> None:
    job_id = submit(
        head,
        "training.epochs=null",
        "training.max_steps=400",
        "resources.placement=SPREAD",  # a rank on each node; both fit on one if they must
        "checkpoint.every_steps=20",
        "failure.max_restarts=2",
        f"output_dir={tmp_path}",
    )
    wait_for_event(tmp_path, "checkpoint_saved")
    cluster.kill_node(1)
    final = wait_for(head, job_id, {"SUCCEEDED", "FAILED", "STOPPED"})
    assert final == "SUCCEEDED", deepyard("logs", job_id, env=head.env()).stdout[-3000:]
    events = events_of(tmp_path)
    failed = [e for e in events if e["type"] == "attempt_failed"]
    assert failed and failed[0]["cause"] == "worker_lost" and failed[0]["retry"]
    (recovered,) = [e for e in events if e["type"] == "recovered"][:1]
    assert recovered["resumed_step"] >= 20  # from a checkpoint, not from scratch
    placed = [e["nodes"] for e in events if e["type"] == "workers"]
    assert len(set(placed[0])) == 2 and len(set(placed[-1])) == 1  # both ranks on the head


def test_a_lost_node_fails_the_job_naming_it_when_the_gang_no_longer_fits(
    cluster: LocalCluster, head: Head, tmp_path: Path, second_node_back: None
) -> None:
    job_id = submit(
        head,
        "training.epochs=null",
        "training.max_steps=100000",
        "resources.placement=STRICT_SPREAD",  # one rank per node: needs both nodes
        "failure.max_restarts=2",
        "failure.lost_node_wait_s=5",
        f"output_dir={tmp_path}",
    )
    wait_for_log(head, job_id, " step ")
    lost = next(e for e in events_of(tmp_path) if e["type"] == "workers")["nodes"]
    cluster.kill_node(1)
    assert wait_for(head, job_id, {"SUCCEEDED", "FAILED", "STOPPED"}) == "FAILED"
    logs = deepyard("logs", job_id, env=head.env()).stdout
    assert isinstance(lost, list)
    named = [node[:8] for node in lost if f"(node {node[:8]})" in logs]
    assert len(named) == 1, logs[-3000:]  # the lost one, not the head that is left
    assert "failure.lost_node_wait_s" in logs and "Traceback" not in logs[-2000:]
    # status says why, in deepyard's words (not "entrypoint failed with exit code 1")
    failed_line = status_line(head, job_id)
    assert f"{job_id}: FAILED (lost " in failed_line and f"(node {named[0]})" in failed_line
    failed = [e for e in events_of(tmp_path) if e["type"] == "attempt_failed"]
    assert [e["cause"] for e in failed] == ["worker_lost", "cluster_shrunk"]
