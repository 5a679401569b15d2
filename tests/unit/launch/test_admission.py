"""The order in which waiting deepyard jobs get to reserve their gang."""

from __future__ import annotations

from deepyard.launch.admission import STALE_S, AdmissionQueue


def test_higher_priority_goes_first_and_equal_priorities_keep_arrival_order() -> None:
    queue = AdmissionQueue()
    queue.join("a", 0, "early-low", now=0)
    queue.join("b", 5, "high", now=1)
    queue.join("c", 0, "late-low", now=2)
    assert queue.ahead("b", now=3) == []
    assert queue.ahead("a", now=3) == ["high"]
    assert queue.ahead("c", now=3) == ["high", "early-low"]
    queue.leave("b")  # high was placed
    assert queue.ahead("a", now=4) == []
    assert queue.ahead("c", now=4) == ["early-low"]


def test_a_rejoin_keeps_its_place_and_a_killed_waiter_is_dropped() -> None:
    queue = AdmissionQueue()
    queue.join("dead", 9, "killed-driver", now=0)
    queue.join("live", 1, "live", now=1)
    queue.join("live", 1, "live", now=5)  # the same ticket again: its arrival is kept
    assert queue.ahead("live", now=STALE_S) == ["killed-driver"]
    # "dead" stopped polling at 0; past STALE_S it no longer blocks anyone.
    assert queue.ahead("live", now=STALE_S + 1) == []
    assert "dead" not in queue.entries
