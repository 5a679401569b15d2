"""Priorities among deepyard jobs waiting for the same Ray cluster.

Ray places pending placement groups roughly in the order they were created, so a queue
in front of them decides the order: only the job at the head of deepyard's queue (highest
`priority`, then longest waiting) holds a pending placement group; the others wait without
one and say how many jobs are ahead. When a higher-priority job arrives, the head gives
up its pending group and waits behind it.

The queue is one detached, named Ray actor per cluster, on the head node (0 CPUs).
Waiters poll it every second; an entry not polled for `STALE_S` (its driver was killed) is
dropped. If the actor is lost (head node restarted), waiters create it again and rejoin.

The guarantee and its limits, on plain Ray:
- Among deepyard jobs that wait, the higher priority starts first; equal priorities start
  in arrival order.
- Strict order: a job behind the head waits even where it alone would fit (no backfill).
- It orders waiting jobs only: a running job is never stopped for a higher priority one.
- Work that is not a deepyard job (other Ray jobs, actors) does not queue here and may
  take free resources first. On Kubernetes, Kueue gives the cluster-wide guarantee.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import ray

ACTOR_NAME = "deepyard-admission"
NAMESPACE = "deepyard"
STALE_S = 30.0
HEAD_RESOURCE = "node:__internal_head__"  # Ray's marker resource of the head node


@dataclass
class _Entry:
    priority: int
    arrived: float
    name: str
    seen: float


@dataclass
class AdmissionQueue:
    """The queue's state and rules, free of Ray (the actor below serves it)."""

    entries: dict[str, _Entry] = field(default_factory=dict)

    def join(self, ticket: str, priority: int, name: str, now: float) -> None:
        if ticket not in self.entries:
            self.entries[ticket] = _Entry(priority, now, name, now)

    def ahead(self, ticket: str, now: float) -> list[str]:
        """Names of the jobs ahead of `ticket`, head first; [] means it is the head.
        A poll: it keeps `ticket` alive and drops entries gone stale."""
        self.entries = {t: e for t, e in self.entries.items() if now - e.seen <= STALE_S}
        mine = self.entries.get(ticket)
        if mine is None:
            return []
        mine.seen = now
        key = (-mine.priority, mine.arrived, ticket)
        first = sorted(
            (
                (-e.priority, e.arrived, t)
                for t, e in self.entries.items()
                if (-e.priority, e.arrived, t) < key
            )
        )
        return [self.entries[t].name for _, _, t in first]

    def leave(self, ticket: str) -> None:
        self.entries.pop(ticket, None)


class _QueueActor:
    def __init__(self) -> None:
        self.queue = AdmissionQueue()

    def join(self, ticket: str, priority: int, name: str) -> None:
        self.queue.join(ticket, priority, name, time.time())

    def ahead(self, ticket: str) -> list[str]:
        return self.queue.ahead(ticket, time.time())

    def leave(self, ticket: str) -> None:
        self.queue.leave(ticket)


class Admission:
    """One job's place in the cluster's queue, from the driver. The queue is a helper, not
    a gate: if it cannot be reached even after being made again, the job goes on without
    it (`ahead()` returns [] and says so once)."""

    def __init__(self, ticket: str, priority: int, name: str, warn: Callable[[str], None]) -> None:
        self.ticket, self.priority, self.name, self.warn = ticket, priority, name, warn
        self._actor: Any = None
        self._broken = False
        self._call("join", ticket, priority, name)

    def ahead(self) -> list[str]:
        """The jobs ahead of this one; [] when it is this job's turn to be placed."""
        return list(self._call("ahead", self.ticket) or [])

    def leave(self) -> None:
        self._call("leave", self.ticket)

    def _call(self, method: str, *args: Any) -> Any:
        if self._broken:
            return None
        for tries in (1, 2):
            try:
                if self._actor is None:
                    self._actor = _queue_actor()
                    if method != "join":  # a queue made again has lost this job: rejoin
                        ray.get(self._actor.join.remote(self.ticket, self.priority, self.name))
                return ray.get(getattr(self._actor, method).remote(*args), timeout=30)
            except (ray.exceptions.RayError, ValueError) as exc:
                self._actor = None
                if tries == 2:
                    self._broken = True
                    self.warn(
                        f"the cluster's job queue ({NAMESPACE}/{ACTOR_NAME}) cannot be reached "
                        f"({type(exc).__name__}); this job is placed without priority order"
                    )
                time.sleep(1.0)
        return None


def _queue_actor() -> Any:
    """The cluster's queue actor, made if it does not exist, on the head node (a worker
    node may go away; the head is where the cluster's own state lives)."""
    return (
        ray.remote(_QueueActor)
        .options(
            name=ACTOR_NAME,
            namespace=NAMESPACE,
            lifetime="detached",
            get_if_exists=True,
            num_cpus=0,
            resources={HEAD_RESOURCE: 0.001},
            max_concurrency=1,
        )
        .remote()
    )
