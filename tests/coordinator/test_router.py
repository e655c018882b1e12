"""The router is a pure function: exact expected routes for given snapshots."""

from __future__ import annotations

import re
import shlex

import pytest

from coordinator.router import NoRouteError, RouteHop, WorkerInfo, choose_route, hop_cost, route_spans
from shardnet.span import LayerSpan
from worker.cli import build_parser


def w(addr: str, span: str, rtt: float = 0.01, per_layer: float = 0.005, load: int = 0) -> WorkerInfo:
    return WorkerInfo(addr, f"http://{addr}", LayerSpan.parse(span), rtt, per_layer, load)


def addrs(route: list[RouteHop]) -> list[str]:
    return [h.address for h in route]


def test_single_chain_is_chosen_in_order() -> None:
    workers = [w("c", "20:30"), w("a", "0:10"), w("b", "10:20")]
    route = choose_route(workers, 30)
    assert addrs(route) == ["a", "b", "c"]
    assert route_spans(route) == [(0, 10), (10, 20), (20, 30)]
    assert route[0] == RouteHop("a", "http://a", LayerSpan(0, 10))


def test_fewer_hops_win_when_rtt_dominates() -> None:
    workers = [w("a", "0:10"), w("b", "10:20"), w("c", "20:30"), w("big", "0:20", rtt=0.01)]
    # big: 0.01 + 20*0.005 = 0.11 vs a+b: 2*(0.01 + 0.05) = 0.12
    assert addrs(choose_route(workers, 30)) == ["big", "c"]


def test_slow_compute_loses_to_two_fast_hops() -> None:
    workers = [w("a", "0:10"), w("b", "10:20"), w("c", "20:30"), w("big", "0:20", per_layer=0.01)]
    # big: 0.01 + 0.2 = 0.21 vs a+b: 0.12
    assert addrs(choose_route(workers, 30)) == ["a", "b", "c"]


def test_load_spreads_over_replicas() -> None:
    workers = [w("a", "0:2"), w("r1", "2:4", load=1), w("r2", "2:4", load=0)]
    assert addrs(choose_route(workers, 4)) == ["a", "r2"]
    workers = [w("a", "0:2"), w("r1", "2:4", load=0), w("r2", "2:4", load=1)]
    assert addrs(choose_route(workers, 4)) == ["a", "r1"]


def test_load_penalty_adds_per_session() -> None:
    busy = w("x", "0:4", rtt=0.0, per_layer=0.0, load=3)
    assert hop_cost(busy) == 0.0
    assert hop_cost(busy, load_penalty_s=0.5) == pytest.approx(1.5)
    workers = [busy, w("y", "0:4", rtt=0.1, per_layer=0.0)]
    assert addrs(choose_route(workers, 4)) == ["x"]
    assert addrs(choose_route(workers, 4, load_penalty_s=0.5)) == ["y"]


def test_tie_break_is_deterministic_by_address() -> None:
    workers = [w("0xBB", "0:4"), w("0xaa", "0:4"), w("0xcc", "0:4")]
    assert addrs(choose_route(workers, 4)) == ["0xaa"]
    assert addrs(choose_route(list(reversed(workers)), 4)) == ["0xaa"]


def test_tie_break_prefers_fewer_hops_at_equal_cost() -> None:
    workers = [w("a", "0:2", rtt=0.0), w("b", "2:4", rtt=0.0), w("z", "0:4", rtt=0.0)]
    assert addrs(choose_route(workers, 4)) == ["z"]


def test_exclude_is_case_insensitive() -> None:
    workers = [w("0xAA", "0:4"), w("0xbb", "0:4", rtt=1.0)]
    assert addrs(choose_route(workers, 4, exclude=["0xaa"])) == ["0xbb"]


def test_partial_route_for_failover() -> None:
    workers = [w("a", "0:2"), w("b", "2:4"), w("c", "4:6"), w("b2", "2:4", rtt=0.5), w("ab", "0:4")]
    assert addrs(choose_route(workers, 6, start=2, end=4, exclude=["b"])) == ["b2"]
    # a worker reaching outside [start, end) is not usable there
    assert addrs(choose_route(workers, 6, start=2, end=6)) == ["b", "c"]


def test_gap_raises_with_the_missing_layer() -> None:
    workers = [w("a", "0:10"), w("c", "20:30")]
    with pytest.raises(NoRouteError, match="layer 10"):
        choose_route(workers, 30)
    with pytest.raises(NoRouteError, match="layer 0"):
        choose_route([], 30)


def test_invalid_bounds() -> None:
    with pytest.raises(ValueError):
        choose_route([], 4, start=4)
    with pytest.raises(ValueError):
        choose_route([], 4, end=5)


def test_no_route_error_suggests_a_worker_command_that_parses() -> None:
    """The command a NoRouteError suggests must be one `worker` accepts, with the missing layers."""
    workers = [WorkerInfo("0xa", "http://a", LayerSpan(0, 10))]
    with pytest.raises(NoRouteError) as caught:
        choose_route(workers, 30)
    suggested = re.search(r"`(worker run [^`]*)`", str(caught.value))
    assert suggested is not None, str(caught.value)
    args = build_parser().parse_args(shlex.split(suggested.group(1))[1:])
    assert args.command == "run" and args.layers == "10:30"


def test_one_router_over_the_directory_routes_covers_and_finds_replicas() -> None:
    from coordinator.directory import WorkerDirectory
    from coordinator.router import Router

    directory = WorkerDirectory()
    for aid, (node, start, end) in enumerate([("0xA", 0, 2), ("0xB", 2, 4), ("0xC", 2, 4), ("0xD", 4, 6)], 1):
        directory.set_endpoint(node, f"http://{node}")
        directory.announce(aid, node, 1, LayerSpan(start, end))
    router = Router(directory, load_penalty_s=1.0)
    directory.add_load("0xb", 1)  # the penalty steers the route to the idle replica
    assert [h.address for h in router.route(1, 6)] == ["0xa", "0xc", "0xd"]
    directory.mark_down("0xc", "test")
    assert [h.address for h in router.cover(1, 6, LayerSpan(2, 4))] == ["0xb"]
    assert router.replicas(1, LayerSpan(2, 4), besides={"0xb"}) == []
    directory.mark_down("0xb", "test")
    with pytest.raises(NoRouteError, match="layer 2"):
        router.route(1, 6)
