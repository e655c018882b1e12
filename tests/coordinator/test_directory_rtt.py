"""The round trip the router prefers low-latency replicas by: the least of each worker's last RTT_WINDOW /health
probes (tests/netns checks the same on real links with 20 ms more delay)."""

from __future__ import annotations

from coordinator.directory import RTT_WINDOW, WorkerDirectory
from coordinator.router import Router
from shardnet.span import LayerSpan


def two_replicas() -> tuple[WorkerDirectory, Router]:
    """0xa serves 0:2; 0xb (near, the higher address) and 0xa2 (20 ms farther each way) both serve 2:4."""
    d = WorkerDirectory()
    for aid, node, span in [(1, "0xa", "0:2"), (2, "0xb", "2:4"), (3, "0xa2", "2:4")]:
        d.set_endpoint(node, f"http://{node}")
        d.announce(aid, node, 1, LayerSpan.parse(span))
    return d, Router(d)


def route_of(router: Router) -> list[str]:
    return [h.address for h in router.route(1, 4)]


def test_the_nearer_replica_wins_although_the_farther_wins_ties() -> None:
    d, router = two_replicas()
    assert route_of(router) == ["0xa", "0xa2"]  # unmeasured: equal costs, the lower address
    for _ in range(3):
        d.record_health("0xb", True, 0.010)
        d.record_health("0xa2", True, 0.050)
    assert route_of(router) == ["0xa", "0xb"]
    assert [w.address for w in router.replicas(1, LayerSpan(2, 4), besides=set())] == ["0xb", "0xa2"]


def test_one_slow_probe_of_the_near_replica_does_not_move_routes() -> None:
    d, router = two_replicas()
    for _ in range(RTT_WINDOW):
        d.record_health("0xb", True, 0.010)
        d.record_health("0xa2", True, 0.050)
    # a 300 ms answer (the worker paused, a queue): an average would now put 0xb at ~0.1 s, above 0xa2
    d.record_health("0xb", True, 0.300)
    d.record_health("0xa2", True, 0.050)
    assert route_of(router) == ["0xa", "0xb"]
    assert next(w for w in d.snapshot(1) if w.address == "0xb").rtt_s == 0.010


def test_a_link_that_got_slower_for_good_is_seen_after_the_window() -> None:
    d, router = two_replicas()
    for _ in range(RTT_WINDOW):
        d.record_health("0xb", True, 0.010)
        d.record_health("0xa2", True, 0.050)
    for i in range(RTT_WINDOW):
        assert route_of(router) == ["0xa", "0xb"], f"moved after {i} slow probes of {RTT_WINDOW}"
        d.record_health("0xb", True, 0.090)
        d.record_health("0xa2", True, 0.050)
    assert route_of(router) == ["0xa", "0xa2"]
    assert next(w for w in d.snapshot(1) if w.address == "0xb").rtt_s == 0.090


def test_failed_probes_mark_down_and_measure_nothing() -> None:
    d, router = two_replicas()
    d.record_health("0xb", True, 0.010)
    d.record_health("0xa2", True, 0.050)
    d.record_health("0xb", False)
    assert route_of(router) == ["0xa", "0xa2"] and d.is_down("0xb")
    d.record_health("0xb", True, 0.012)  # back: its round trip is still the least it was seen with
    assert route_of(router) == ["0xa", "0xb"]
    assert next(w for w in d.snapshot(1) if w.address == "0xb").rtt_s == 0.010
