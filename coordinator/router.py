"""Routing: choose the chain of workers that covers a model's layers with the least expected latency.

A pure, deterministic function over a snapshot of live workers (no I/O, no clock, no randomness), in
the spirit of Petals' `sequence_manager.make_sequence(mode="min_latency")`: the layer boundaries
0..L are the vertices of a graph, each worker serving [a, b) is an edge a -> b, and its weight is the
worker's expected latency for one step:

    cost(w) = rtt_s + (b - a) * compute_per_layer_s * (1 + load) + load_penalty_s * load

`load` is the number of sessions the worker is serving now, so a busy replica costs more than an idle
one and traffic spreads over replicas. Every edge goes forward (a < b), so the graph is acyclic and
the shortest path is a single pass over the boundaries in increasing order. Ties are broken by fewer
hops, then by the tuple of worker addresses (lowercase), so the same snapshot always gives the same
route.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from shardnet.errors import ShardnetError
from shardnet.span import LayerSpan

if TYPE_CHECKING:
    from coordinator.directory import WorkerDirectory

#: Assumed figures for a worker that has not been measured yet (seconds).
DEFAULT_RTT_S = 0.010
DEFAULT_COMPUTE_PER_LAYER_S = 0.005


class NoRouteError(ShardnetError, LookupError):
    """No chain of live workers covers the layers that must be routed."""


@dataclass(frozen=True)
class WorkerInfo:
    """One live worker as the router sees it."""

    address: str  # the node's on-chain address
    endpoint: str  # base URL of its HTTP API
    span: LayerSpan  # the layers it serves, [start, end)
    rtt_s: float = DEFAULT_RTT_S  # measured round trip of a small request (seconds)
    compute_per_layer_s: float = DEFAULT_COMPUTE_PER_LAYER_S  # measured compute per layer and step (seconds)
    load: int = 0  # sessions it serves now


@dataclass(frozen=True)
class RouteHop:
    """One hop of a route: a worker and the span it computes."""

    address: str
    endpoint: str
    span: LayerSpan


def hop_cost(worker: WorkerInfo, *, load_penalty_s: float = 0.0) -> float:
    """Expected latency of one step through `worker` (see the module docstring)."""
    layers = len(worker.span)
    return (
        worker.rtt_s + layers * worker.compute_per_layer_s * (1 + worker.load) + load_penalty_s * worker.load
    )


def choose_route(
    workers: Iterable[WorkerInfo],
    num_layers: int,
    *,
    start: int = 0,
    end: int | None = None,
    exclude: Iterable[str] = (),
    load_penalty_s: float = 0.0,
) -> list[RouteHop]:
    """Return the hops over layers [start, end) (default [0, num_layers)) with the least expected latency.

    Workers whose address is in `exclude` (case-insensitive) are skipped, and so are workers whose
    span does not fit inside [start, end). Raises NoRouteError naming the first layer that no
    chain of workers reaches.
    """
    stop = num_layers if end is None else end
    if not 0 <= start < stop <= num_layers:
        raise ValueError(f"cannot route layers [{start}, {stop}) of a model with {num_layers} layers")
    banned = {a.lower() for a in exclude}
    by_end: dict[int, list[WorkerInfo]] = {}
    for w in workers:
        if w.address.lower() in banned or w.span.start < start or w.span.end > stop:
            continue
        by_end.setdefault(w.span.end, []).append(w)

    # best[b] = (cost, hops, addresses, path) of the best chain from `start` to boundary b.
    Best = tuple[float, int, tuple[str, ...], tuple[WorkerInfo, ...]]
    best: dict[int, Best] = {start: (0.0, 0, (), ())}
    for boundary in range(start + 1, stop + 1):
        candidates: list[Best] = []
        for w in by_end.get(boundary, ()):
            prev = best.get(w.span.start)
            if prev is None:
                continue
            cost = prev[0] + hop_cost(w, load_penalty_s=load_penalty_s)
            candidates.append((cost, prev[1] + 1, prev[2] + (w.address.lower(),), prev[3] + (w,)))
        if candidates:
            best[boundary] = min(candidates, key=lambda c: (c[0], c[1], c[2]))
    if stop not in best:
        reached = max(best)
        raise NoRouteError(
            f"no live worker chain covers layers [{start}, {stop}): nothing serves layer {reached} onwards "
            f"from the chain so far; start a worker for a span beginning at layer {reached} "
            f"(e.g. `worker run --layers {reached}:{stop}`) or wait for one to come back"
        )
    return [RouteHop(w.address, w.endpoint, w.span) for w in best[stop][3]]


def route_spans(route: Sequence[RouteHop]) -> list[tuple[int, int]]:
    """The (start, end) pairs of a route (for logs and views)."""
    return [(h.span.start, h.span.end) for h in route]


class Router:
    """The coordinator's one place for route choice: the directory of live workers and `choose_route` over it.

    The OpenAI API (can a request be served before it is paid?), the jobs (the first route) and the pipeline
    (replacements after a failure, replicas to verify against) all ask the same object.
    """

    def __init__(self, directory: WorkerDirectory, *, load_penalty_s: float = 0.0) -> None:
        self.directory = directory  # liveness, load and measurements, updated by events, probes and steps
        self.load_penalty_s = load_penalty_s

    def route(self, model_id: int, num_layers: int) -> list[RouteHop]:
        """The cheapest chain of live workers over all of the model's layers; raises NoRouteError."""
        return choose_route(self.directory.snapshot(model_id), num_layers, load_penalty_s=self.load_penalty_s)

    def cover(
        self, model_id: int, num_layers: int, span: LayerSpan, *, exclude: Iterable[str] = ()
    ) -> list[RouteHop]:
        """The cheapest chain of live workers over exactly `span` (a replacement for a failed hop), none of them in
        `exclude` (e.g. workers that just refused a session as busy)."""
        return choose_route(
            self.directory.snapshot(model_id),
            num_layers,
            start=span.start,
            end=span.end,
            exclude=exclude,
            load_penalty_s=self.load_penalty_s,
        )

    def replicas(self, model_id: int, span: LayerSpan, *, besides: set[str]) -> list[WorkerInfo]:
        """Live workers serving exactly `span` other than `besides`, cheapest first (to verify against)."""
        return self.directory.replicas(model_id, span, besides=besides)
