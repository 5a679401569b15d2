"""Where a gang lands: local ranks and GPUs per node, what a waiting gang lacks, and
whether it fits the nodes left after one is lost."""

from __future__ import annotations

import pytest

from deepyard.errors import SpecError
from deepyard.launch.placement import (
    Address,
    contexts,
    fits,
    tensor_group_order,
    waiting_message,
)
from deepyard.spec import ResourcesSpec


def test_local_ranks_count_workers_per_ray_node_not_per_ip() -> None:
    """Two Ray nodes on one machine share an IP; each node's workers still count from 0."""
    addresses = [
        Address("10.0.0.1", 29500, 11, "node-a"),
        Address("10.0.0.1", 29501, 12, "node-b"),
        Address("10.0.0.1", 29502, 13, "node-a"),
    ]
    ranks = contexts(addresses)
    assert [c.local_rank for c in ranks] == [0, 0, 1]
    assert {(c.master_addr, c.master_port, c.world_size) for c in ranks} == {("10.0.0.1", 29500, 3)}
    assert {(c.visible_devices, c.device_index) for c in ranks} == {(None, None)}


def test_workers_of_one_node_see_its_gang_gpus_and_each_drives_its_own() -> None:
    """Ray gave rank 0 GPU 3 and rank 2 GPU 1 on node a, rank 1 GPU 0 on node b: both
    node-a workers see "1,3" (NCCL peers) and drive their own GPU, not GPU local_rank."""
    addresses = [
        Address("10.0.0.1", 29500, 11, "node-a", ("3",)),
        Address("10.0.0.2", 29501, 12, "node-b", ("0",)),
        Address("10.0.0.1", 29502, 13, "node-a", ("1",)),
    ]
    ranks = contexts(addresses)
    assert [(c.visible_devices, c.device_index) for c in ranks] == [
        ("1,3", 1),
        ("0", 0),
        ("1,3", 0),
    ]
    assert len({(a.node_id, a.gpu_ids) for a in addresses}) == 3  # no GPU driven twice


def test_a_waiting_gang_names_the_resource_it_lacks_first() -> None:
    res = ResourcesSpec(num_workers=4, cpus_per_worker=1, gpus_per_worker=2)
    line = waiting_message(res, {"CPU": 6, "GPU": 4}, {"CPU": 8, "GPU": 8})
    assert line == (
        "waiting for resources: needs 8 GPU (4 workers x 2), cluster has 4 free; "
        "needs 4 CPU (4 workers x 1), cluster has 6 free"
    )


def test_a_gang_larger_than_the_cluster_says_it_needs_more_nodes() -> None:
    res = ResourcesSpec(num_workers=2, custom={"fake_gpu": 2}, placement="STRICT_SPREAD")
    line = waiting_message(
        res, {"CPU": 4, "fake_gpu": 2}, {"CPU": 4, "fake_gpu": 2}, ahead=["big", "bigger"]
    )
    assert line.startswith(
        "waiting for resources: needs 4 fake_gpu (2 workers x 2), cluster has 2 free "
        "and 2 in all (it starts only when nodes are added); needs 2 CPU"
    )
    assert "(placement STRICT_SPREAD)" in line
    assert line.endswith("behind 2 deepyard job(s) in the queue: big, bigger")


@pytest.mark.parametrize(
    ("placement", "nodes", "expected"),
    [
        ("PACK", [{"CPU": 2}, {"CPU": 2}], True),  # one bundle per node is allowed
        ("SPREAD", [{"CPU": 4}], True),  # SPREAD packs when it must
        ("PACK", [{"CPU": 3}], False),
        ("STRICT_PACK", [{"CPU": 2}, {"CPU": 2}], False),
        ("STRICT_PACK", [{"CPU": 4}], True),
        ("STRICT_SPREAD", [{"CPU": 8}], False),
        ("STRICT_SPREAD", [{"CPU": 2}, {"CPU": 1}], True),
    ],
)
def test_whether_a_gang_fits_the_nodes_left(
    placement: str, nodes: list[dict[str, float]], expected: bool
) -> None:
    res = ResourcesSpec(num_workers=2, cpus_per_worker=1, placement=placement)  # type: ignore[arg-type]
    res4 = ResourcesSpec(num_workers=4, cpus_per_worker=1, placement=placement)  # type: ignore[arg-type]
    gang = res if placement.startswith("STRICT_SPREAD") else res4
    assert fits(gang, nodes) is expected


def test_a_bundle_must_fit_whole_on_one_node() -> None:
    res = ResourcesSpec(num_workers=1, cpus_per_worker=1, custom={"fake_gpu": 2})
    assert not fits(res, [{"CPU": 4, "fake_gpu": 1}, {"CPU": 4, "fake_gpu": 1}])
    assert fits(res, [{"CPU": 1, "fake_gpu": 2}])


def _landed(*nodes: str) -> list[Address]:
    return [Address("10.0.0.1", 1000 + i, 100 + i, node) for i, node in enumerate(nodes)]


def test_tensor_groups_are_ranked_node_by_node() -> None:
    # Ray placed the gang interleaved over two nodes: a, b, a, b.
    order = tensor_group_order(_landed("a", "b", "a", "b"), tensor=2)
    assert order == [0, 2, 1, 3]  # ranks 0-1 on node a, ranks 2-3 on node b


def test_without_tensor_parallelism_the_placement_order_stands() -> None:
    assert tensor_group_order(_landed("a", "b", "a", "b"), tensor=1) == [0, 1, 2, 3]


def test_a_tensor_group_split_over_nodes_is_refused_with_the_fix() -> None:
    with pytest.raises(SpecError) as info:
        tensor_group_order(_landed("a", "a", "a", "b"), tensor=2)
    message = str(info.value)
    assert "parallelism.tensor=2 keeps each group of 2 ranks on one node" in message
    assert "3 on a, 1 on b" in message
    assert "STRICT_PACK" in message
