"""Where a job's gang lands: its bundles, what a waiting gang lacks, and each rank's place
on its node (local rank, and the GPU it drives).

GPUs: Ray gives each GPU worker its own device ids and sets CUDA_VISIBLE_DEVICES to them
alone. NCCL between workers of one node wants every local peer's GPU visible (peer to peer,
NVLink), so each worker is shown the union of its node's gang GPUs and drives the one Ray
gave it: its index in that union (Ray Train does the same).
"""

from __future__ import annotations

import collections
from dataclasses import dataclass

from deepyard.errors import SpecError
from deepyard.spec import ResourcesSpec
from deepyard.train.dist import WorkerContext


@dataclass(frozen=True)
class Address:
    """Where one rank runs: its node's IP, a free port there, its PID, Ray node id, and
    the GPU ids Ray gave it."""

    ip: str
    port: int
    pid: int
    node_id: str
    gpu_ids: tuple[str, ...] = ()


def bundles(res: ResourcesSpec) -> list[dict[str, float]]:
    """One placement-group bundle per rank."""
    return [res.per_worker() for _ in range(res.num_workers)]


def contexts(addresses: list[Address]) -> list[WorkerContext]:
    """Rank 0's node and port host the rendezvous; local ranks count workers per Ray node
    (by node id: two nodes may share an IP, as in a one-machine test cluster)."""
    master = addresses[0]
    node_gpus: dict[str, list[str]] = collections.defaultdict(list)
    for address in addresses:
        node_gpus[address.node_id] += address.gpu_ids
    visible = {node: sorted(set(ids), key=_device_order) for node, ids in node_gpus.items()}
    per_node: dict[str, int] = collections.Counter()
    out = []
    for rank, address in enumerate(addresses):
        local = per_node[address.node_id]
        per_node[address.node_id] += 1
        devices = visible[address.node_id]
        out.append(
            WorkerContext(
                rank,
                len(addresses),
                local,
                master.ip,
                master.port,
                visible_devices=",".join(devices) if devices else None,
                device_index=devices.index(address.gpu_ids[0]) if address.gpu_ids else None,
            )
        )
    return out


def tensor_group_order(addresses: list[Address], tensor: int) -> list[int]:
    """The workers in rank order such that each tensor-parallel group (`tensor`
    consecutive ranks: its all-reduces run at every layer, and want NVLink, not the
    network) sits on one node: workers grouped node by node, in order of first arrival.
    Raises SpecError if some node holds a number of workers that `tensor` does not
    divide. Without tensor parallelism: the order Ray placed them in."""
    if tensor == 1:
        return list(range(len(addresses)))
    by_node: dict[str, list[int]] = collections.defaultdict(list)
    for index, address in enumerate(addresses):
        by_node[address.node_id].append(index)
    split = {node: len(found) for node, found in by_node.items() if len(found) % tensor}
    if split:
        landed = ", ".join(f"{len(found)} on {node[:12]}" for node, found in by_node.items())
        raise SpecError(
            f"parallelism.tensor={tensor} keeps each group of {tensor} ranks on one node, but "
            f"the gang landed {landed}; use resources.placement: STRICT_PACK (one node), or "
            f"make every node hold a multiple of {tensor} workers (e.g. nodes of "
            f"{tensor} x gpus_per_worker GPUs)"
        )
    return [index for found in by_node.values() for index in found]


def _device_order(device: str) -> tuple[int, str]:
    return (int(device), "") if device.isdigit() else (1 << 30, device)


def waiting_message(
    res: ResourcesSpec,
    free: dict[str, float],
    total: dict[str, float],
    ahead: list[str] | None = None,
) -> str:
    """What a waiting gang needs against what the cluster has free and in all, short
    resources first: "needs 4 GPU (2 workers x 2), cluster has 2 free; ..."."""
    need = {name: amount * res.num_workers for name, amount in res.per_worker().items()}
    order = sorted(need, key=lambda n: (free.get(n, 0.0) >= need[n], n != "GPU", n))
    parts = []
    for name in order:
        part = (
            f"needs {need[name]:g} {name} ({res.num_workers} workers x "
            f"{res.per_worker()[name]:g}), cluster has {free.get(name, 0.0):g} free"
        )
        if total.get(name, 0.0) < need[name]:
            part += f" and {total.get(name, 0.0):g} in all (it starts only when nodes are added)"
        parts.append(part)
    line = "waiting for resources: " + "; ".join(parts)
    if res.placement.startswith("STRICT_"):
        line += f" (placement {res.placement})"
    if ahead:
        line += f"; behind {len(ahead)} deepyard job(s) in the queue: {', '.join(ahead[:3])}"
        line += " ..." if len(ahead) > 3 else ""
    return line


def fits(res: ResourcesSpec, nodes: list[dict[str, float]]) -> bool:
    """Whether the gang fits on these nodes' resources at all (each rank's bundle whole on
    one node, as the placement strategy allows)."""
    per = res.per_worker()
    holds = [
        min(int(node.get(name, 0.0) // amount) for name, amount in per.items()) for node in nodes
    ]
    if res.placement == "STRICT_PACK":
        return any(count >= res.num_workers for count in holds)
    if res.placement == "STRICT_SPREAD":
        return sum(count >= 1 for count in holds) >= res.num_workers
    return sum(holds) >= res.num_workers


def node_label(node: dict[str, object]) -> str:
    """A Ray node as a user finds it: its address and the start of its id."""
    return f"{node.get('NodeManagerAddress', '?')} (node {str(node.get('NodeID', '?'))[:8]})"
