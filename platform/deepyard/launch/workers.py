"""A gang of training workers on Ray: one placement group, one actor per rank.

Ray core actors rather than Ray Train: command-to-first-step measured ≈ 17 s here
against 31-45 s for Ray Train v2 (docs/benchmarks.md). The group starts all workers
at once or waits (placement group = gang), forms the torch process group through
rank 0's address, streams rank 0's events to the driver, and on the first failure
of any rank stops every rank, so a job never hangs on a dead peer. A worker that
makes no step progress for `failure.hang_timeout_s` is a hang: every rank's Python
stack goes to the job's log and the attempt fails like a crash.
"""

from __future__ import annotations

import collections
import os
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from typing import Any

import ray
from ray.util.placement_group import PlacementGroup, placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from deepyard.errors import ClusterShrunk, DeepyardError, RetryableError, TrainingError
from deepyard.launch.admission import Admission
from deepyard.launch.hold import Hold
from deepyard.launch.placement import (
    Address,
    bundles,
    contexts,
    fits,
    node_label,
    tensor_group_order,
    waiting_message,
)
from deepyard.spec import JobSpec, ResourcesSpec
from deepyard.train.dist import WorkerContext, free_port
from deepyard.train.loop import Sources
from deepyard.train.plan import AttemptPlan

OnEvent = Callable[[dict[str, Any]], None]


class WorkerLost(RetryableError):
    """A worker process died (killed, out of memory, its node lost)."""


class WorkerHung(RetryableError):
    """No step progress for failure.hang_timeout_s."""


class TrainWorker:
    """One rank. Threaded (max_concurrency=3) so the driver can drain events, ask for a
    stop and read stacks while the training thread runs."""

    def __init__(self) -> None:
        self._events: collections.deque[dict[str, Any]] = collections.deque()
        self._stop = threading.Event()
        self._hold = Hold(self._stop)

    def address(self) -> Address:
        node = ray.get_runtime_context().get_node_id()
        gpus = tuple(str(gpu) for gpu in ray.get_gpu_ids())
        return Address(ray.util.get_node_ip_address(), free_port(), os.getpid(), node, gpus)

    def run(
        self, spec: JobSpec, sources: Sources, ctx: WorkerContext, plan: AttemptPlan
    ) -> dict[str, Any]:
        from deepyard.train.loop import train

        hold = self._hold.wait if plan.hold_after_eval else None
        return train(spec, sources, ctx, self._events.append, plan, self._stop, hold)

    def release(self, step: int) -> None:
        """The driver has passed on the evaluation at `step`: train on (launch/hold.py)."""
        self._hold.release(step)

    def request_stop(self) -> None:
        """Checkpoint at the next step boundary all ranks agree on, then return."""
        self._stop.set()

    def stacks(self) -> str:
        """Every thread's Python stack in this worker process."""
        names = {t.ident: t.name for t in threading.enumerate()}
        out = [f"pid {os.getpid()}"]
        for ident, frame in sys._current_frames().items():
            out.append(f"--- thread {names.get(ident, ident)}")
            out.append("".join(traceback.format_stack(frame)).rstrip())
        return "\n".join(out)

    def drain(self) -> list[dict[str, Any]]:
        out = []
        while self._events:
            out.append(self._events.popleft())
        return out


class WorkerGroup:
    """Start, run and stop the job's workers; `stop()` is safe to call at any time."""

    def __init__(
        self,
        spec: JobSpec,
        on_event: OnEvent,
        wait_note: Callable[[str], None],
        placement: PlacementGroup | None = None,
        queue: bool = True,
        lost_from: list[str] | None = None,
    ) -> None:
        """`placement`: a placement group reserved for the job already (a sweep trial's,
        one bundle per rank); by default the group reserves and releases its own, after
        its turn in the cluster's priority queue (`queue`; launch/admission.py).
        `lost_from`: the nodes of the attempt that failed: if the gang no longer fits the
        cluster, it waits `failure.lost_node_wait_s` for room, then fails naming them."""
        self.spec = spec
        self.on_event = on_event
        self.wait_note = wait_note
        self.placement = placement
        self.queue = queue
        self.lost_from = lost_from or []
        self.pg: PlacementGroup | None = None
        self.actors: list[Any] = []
        self.pids: list[int] = []
        self.stop_requested = False
        self.hang_report = ""  # every rank's stacks, when the attempt hung
        self.holding = False  # the ranks wait after each evaluation until it is passed on

    def start(self) -> None:
        if self.placement is not None:
            self.pg = self.placement
            self._wait_for_placement()
        else:
            self._admit()
        assert self.pg is not None
        self.on_event({"type": "phase", "name": "resources_reserved", "t": time.time()})
        res = self.spec.resources
        worker_cls = ray.remote(TrainWorker)
        self.actors = [
            worker_cls.options(
                num_cpus=res.cpus_per_worker,
                num_gpus=res.gpus_per_worker,
                resources=dict(res.custom),
                max_concurrency=3,
                scheduling_strategy=PlacementGroupSchedulingStrategy(
                    self.pg, placement_group_bundle_index=rank
                ),
            ).remote()
            for rank in range(res.num_workers)
        ]

    def _wait_for_placement(self) -> None:
        assert self.pg is not None
        ready = self.pg.ready()
        noted = time.monotonic() - 13  # the first note after 2 s, then every 15 s
        while not ray.wait([ready], timeout=1.0)[0]:
            if time.monotonic() - noted > 15:
                noted = time.monotonic()
                self.wait_note(self._waiting_message())

    def _admit(self) -> None:
        """Reserve the gang when it is this job's turn; until then wait, saying why."""
        res = self.spec.resources
        admission = (
            Admission(uuid.uuid4().hex, self.spec.priority, self.spec.name, self.wait_note)
            if self.queue
            else None
        )
        room = _Room(res, self.lost_from, self.spec.failure.lost_node_wait_s)
        noted, ready = time.monotonic() - 13, None  # the first note after 2 s
        try:
            while True:
                ahead = admission.ahead() if admission is not None else []
                if ahead and self.pg is not None:  # a higher priority arrived: it goes first
                    remove_placement_group(self.pg)
                    self.pg = ready = None
                if not ahead and self.pg is None:
                    self.pg = placement_group(bundles(res), strategy=res.placement)
                    ready = self.pg.ready()
                if ready is not None and ray.wait([ready], timeout=1.0)[0]:
                    return
                if ready is None:
                    time.sleep(1.0)
                room.check()
                if time.monotonic() - noted > 15:
                    noted = time.monotonic()
                    self.wait_note(self._waiting_message(ahead))
        finally:
            if admission is not None:
                admission.leave()

    def _waiting_message(self, ahead: list[str] | None = None) -> str:
        free, total = ray.available_resources(), ray.cluster_resources()
        return waiting_message(self.spec.resources, free, total, ahead)

    def run(self, sources: Sources, plan: AttemptPlan, poll_s: float = 0.25) -> dict[str, Any]:
        addresses: list[Address] = ray.get([a.address.remote() for a in self.actors])
        # Rank order: each tensor-parallel group on one node (a no-op without one).
        order = tensor_group_order(addresses, self.spec.parallelism.tensor)
        self.actors = [self.actors[index] for index in order]
        addresses = [addresses[index] for index in order]
        self.pids = [a.pid for a in addresses]
        self.on_event({"type": "phase", "name": "workers_started", "t": time.time()})
        self.on_event(
            {
                "type": "workers",
                "nodes": [a.node_id for a in addresses],  # by rank: where the gang landed
                "pids": self.pids,
                "gpus": [list(a.gpu_ids) for a in addresses],
                "t": time.time(),
            }
        )
        ranks_at = contexts(addresses)
        ranks = {
            actor.run.remote(self.spec, sources, ctx, plan): ctx.rank
            for actor, ctx in zip(self.actors, ranks_at, strict=True)
        }
        self.holding = plan.hold_after_eval
        pending, result, stop_sent = list(ranks), {}, False
        watch = _Progress(self.spec.failure.hang_timeout_s)
        while pending:
            if self.stop_requested and not stop_sent:
                stop_sent = self._send_stop()
            done, pending = ray.wait(pending, num_returns=1, timeout=poll_s)
            watch.saw(self._drain())
            if watch.hung():
                self._hang(watch)
            for ref in done:
                out = self._result(ref, ranks[ref], pending, ranks)
                if ranks[ref] == 0:
                    result = out
        self._drain()
        return result

    def request_stop(self) -> None:
        """Preemption: every rank checkpoints at the next agreed step boundary and returns.
        Safe in a signal handler: the run loop passes the request on."""
        self.stop_requested = True

    def _send_stop(self) -> bool:
        for actor in self.actors:
            actor.request_stop.remote()
        self.wait_note("stop requested: checkpointing at the next step boundary, then exiting")
        return True

    def _hang(self, watch: _Progress) -> None:
        stacks = []
        for rank, actor in enumerate(self.actors):
            try:
                stacks.append(f"=== rank {rank}\n" + ray.get(actor.stacks.remote(), timeout=10))
            except Exception as exc:  # a dead or stuck rank has no stack to give
                stacks.append(f"=== rank {rank}\n(no stack: {type(exc).__name__}: {exc})")
        self.hang_report = "\n".join(stacks)
        raise WorkerHung(
            f"no step progress for {watch.silent_s():.0f} s (failure.hang_timeout_s="
            f"{watch.timeout_s:g}) after step {watch.last_step}; every rank's stack was dumped"
        )

    def _drain(self) -> list[dict[str, Any]]:
        """Every rank's new events (rank 0's first); returns rank 0's."""
        refs = [actor.drain.remote() for actor in self.actors]
        batches: list[list[dict[str, Any]]] = []
        lost: WorkerLost | None = None
        for rank, ref in enumerate(refs):
            try:
                batches.append(ray.get(ref))
            except ray.exceptions.RayActorError as exc:
                batches.append([])
                lost = lost or self._lost(rank, exc)
        for events in batches:  # the survivors' news first: how far training got
            for event in events:
                self.on_event(event)  # a Tune trial's report returns when Tune continues
                if self.holding and event.get("type") == "eval":
                    for actor in self.actors:
                        actor.release.remote(event["step"])
        if lost is not None:
            raise lost
        return batches[0]

    def _result(
        self, ref: Any, rank: int, pending: list[Any], ranks: dict[Any, int]
    ) -> dict[str, Any]:
        try:
            out: dict[str, Any] = ray.get(ref)
            return out
        except ray.exceptions.RayTaskError as exc:
            # A dead peer makes the others fail in their collectives: name the death.
            self._raise_lost_peer(pending, ranks)
            cause = exc.cause
            if isinstance(cause, DeepyardError):
                raise cause from None
            message = f"{type(cause).__name__}: {cause}" if cause else str(exc).splitlines()[0]
            raise TrainingError(message, rank, worker_traceback=str(exc)) from None
        except ray.exceptions.RayActorError as exc:
            raise self._lost(rank, exc) from None

    def _lost(self, rank: int, exc: Exception) -> WorkerLost:
        pid = self.pids[rank] if rank < len(self.pids) else "?"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "actor died"
        return WorkerLost(f"worker rank {rank} (pid {pid}) died: {first}")

    def _raise_lost_peer(self, pending: list[Any], ranks: dict[Any, int]) -> None:
        if not pending:
            return
        done, _ = ray.wait(pending, num_returns=len(pending), timeout=3.0)
        for ref in done:
            try:
                ray.get(ref)
            except ray.exceptions.RayActorError as exc:
                raise self._lost(ranks[ref], exc) from None
            except Exception:  # only a dead peer is of interest here
                continue

    def stop(self) -> None:
        for actor in self.actors:
            ray.kill(actor, no_restart=True)
        self.actors = []
        if self.pg is not None and self.placement is None:
            remove_placement_group(self.pg)
        self.pg = None


class _Progress:
    """When rank 0 last reported anything; a hang is silence after the first step."""

    def __init__(self, timeout_s: float | None) -> None:
        self.timeout_s = timeout_s
        self.last_t = time.monotonic()
        self.last_step = 0

    def saw(self, events: list[dict[str, Any]]) -> None:
        if events:
            self.last_t = time.monotonic()
        for event in events:
            if event.get("type") == "step":
                self.last_step = event["step"]

    def silent_s(self) -> float:
        return time.monotonic() - self.last_t

    def hung(self) -> bool:
        return (
            self.timeout_s is not None and self.last_step > 0 and self.silent_s() > self.timeout_s
        )


class _Room:
    """After a node loss: whether the cluster's live nodes can still hold the gang, and
    the failure, naming the lost nodes, once it could not for `wait_s`."""

    def __init__(self, res: ResourcesSpec, lost_from: list[str], wait_s: float) -> None:
        self.res, self.lost_from, self.wait_s = res, lost_from, wait_s
        self.short_since: float | None = None
        self.checked = 0.0

    def check(self) -> None:
        if not self.lost_from or time.monotonic() - self.checked < 2.0:
            return
        self.checked = time.monotonic()
        nodes = ray.nodes()
        alive = [n["Resources"] for n in nodes if n["Alive"]]
        if fits(self.res, alive):
            self.short_since = None
            return
        self.short_since = self.short_since or time.monotonic()
        if time.monotonic() - self.short_since < self.wait_s:
            return
        lost = [n for n in nodes if not n["Alive"] and n["NodeID"] in self.lost_from]
        named = ", ".join(node_label(n) for n in lost) or "a node of the last attempt"
        have = sum(n.get("CPU", 0.0) for n in alive)
        raise ClusterShrunk(
            f"lost {named}, and the {len(alive)} node(s) left ({have:g} CPU in all) cannot "
            f"hold the job's {self.res.num_workers} workers x {self.res.per_worker()} "
            f"({self.res.placement}); waited {self.wait_s:g} s (failure.lost_node_wait_s) "
            "for nodes to come back. Submit it again when the cluster has room: it resumes "
            "from its newest checkpoint"
        )
