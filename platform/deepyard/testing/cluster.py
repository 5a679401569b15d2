"""A real multi-node Ray cluster on one machine: a head (`ray start --head`) and worker
nodes (`ray start --address`), on 127.0.0.1, with token authentication, each node its own
process group so it can be stopped, or killed like a lost machine, by PID.

Never `ray stop`: it would stop every Ray on the machine, other users' too.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from deepyard.train.dist import free_port

RAY = str(Path(sys.executable).parent / "ray")


@dataclass
class LocalCluster:
    """`nodes[0]` is the head. Every node has `cpus` CPUs and the `resources` given."""

    cpus: int = 2
    resources: dict[str, float] = field(default_factory=dict)
    token: str = field(default_factory=lambda: secrets.token_hex(16))
    temp: str = field(default_factory=lambda: tempfile.mkdtemp(prefix="dy-ray-", dir="/tmp"))
    dashboard: int = field(default_factory=free_port)
    gcs: int = field(default_factory=free_port)
    nodes: list[subprocess.Popen[bytes] | None] = field(default_factory=list)

    @property
    def address(self) -> str:
        """The Jobs API (dashboard) address a client submits to."""
        return f"http://127.0.0.1:{self.dashboard}"

    def env(self) -> dict[str, str]:
        """The nodes' environment: token auth on; a job's entrypoint runs `python`, so
        this interpreter (with deepyard installed) comes first on PATH."""
        return {
            **os.environ,
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN": self.token,
            "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        }

    def _command(self, index: int) -> list[str]:
        base = [
            RAY,
            "start",
            "--block",
            f"--num-cpus={self.cpus}",
            "--node-ip-address=127.0.0.1",
            # Ray's default agent port (52365) is one per machine: a second cluster, or a
            # node left over from another run, would leave this one with no job agent.
            f"--dashboard-agent-listen-port={free_port()}",
        ]
        if self.resources:
            base.append(f"--resources={json.dumps(self.resources)}")
        if index == 0:
            return [
                *base,
                "--head",
                f"--port={self.gcs}",
                "--dashboard-host=127.0.0.1",
                f"--dashboard-port={self.dashboard}",
                f"--ray-client-server-port={free_port()}",
                f"--temp-dir={self.temp}",
            ]
        # Its own temp dir: nodes sharing one would each clean up the other's runtime-env
        # files (a job's working dir vanished from under its workers).
        return [*base, f"--address=127.0.0.1:{self.gcs}", f"--temp-dir={self.temp}/node{index}"]

    def start_node(self, index: int) -> None:
        """Start node `index` (0: the head), or start it again after it was killed."""
        proc = subprocess.Popen(
            self._command(index),
            env=self.env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # its own process group: everything it starts
        )
        if index < len(self.nodes):
            self.nodes[index] = proc
        else:
            self.nodes.append(proc)

    def kill_node(self, index: int) -> None:
        """SIGKILL node `index` and every process it started, as when a machine dies."""
        proc = self.nodes[index]
        assert proc is not None
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        self.nodes[index] = None

    def alive_nodes(self) -> int:
        """How many nodes the cluster's GCS counts alive (its state API); -1 before the
        head answers."""
        request = urllib.request.Request(
            f"{self.address}/api/v0/nodes", headers={"Authorization": f"Bearer {self.token}"}
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as answer:
                nodes = json.load(answer)["data"]["result"]["result"]
        except (OSError, ValueError, KeyError):
            return -1
        return sum(node["state"] == "ALIVE" for node in nodes)

    def stop(self) -> None:
        for proc in reversed(self.nodes):
            if proc is None:
                continue
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        self.nodes = []
        shutil.rmtree(self.temp, ignore_errors=True)

    def wait_for_nodes(self, count: int, timeout_s: float = 120) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.alive_nodes() == count:
                return
            time.sleep(1)
        raise TimeoutError(f"the cluster never had {count} nodes alive")
