"""The live workers a coordinator can route through, learned from chain events and kept fresh by probes.

Assignments come from `ShardAnnounced` / `ShardReleased`, endpoints from `NodeRegistered` /
`EndpointUpdated`, exclusions from `NodeSlashed` (and the coordinator's own slashes). A worker is
routable when it has a live assignment, is not excluded, and is not down. A failed or timed-out step
marks a worker down at once; only a successful `/health` probe brings it back. Probes also measure the
round trip, and step timings measure compute per layer; the router reads both through `snapshot()`.

The round trip a worker is routed by is the least of its last `RTT_WINDOW` probes (a windowed minimum, as
TCP's min-RTT filters keep it): the link's delay is the floor under every probe, and what lies above it is the
worker being busy for a moment (load is counted apart), a pause or a queue. A single slow probe of a close
worker therefore never sends routes to a farther replica, and a link that got slower for good is seen once
`RTT_WINDOW` probes have crossed it. Compute per layer is an exponential moving average of step timings.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from coordinator.router import DEFAULT_COMPUTE_PER_LAYER_S, DEFAULT_RTT_S, WorkerInfo
from shardnet.peer.errors import BUSY_CODES, TooManySessions, WorkerAPIError, WorkerUnavailable
from shardnet.span import LayerSpan

log = logging.getLogger(__name__)

EWMA = 0.3  # weight of a new compute measurement
RTT_WINDOW = 8  # probes the round trip is the minimum of


def is_busy(exc: BaseException) -> bool:
    """A worker's refusal that means "busy, try again", not "down": a 429 (its session limit for us, or our
    connections) or a 503 whose machine-readable code is `memory_full` or `sessions_full`. A 503 `draining` (or
    one without a code) means the worker takes no new work."""
    if isinstance(exc, TooManySessions):
        return True
    return isinstance(exc, WorkerUnavailable) and exc.code in BUSY_CODES


__all__ = ["WorkerAPIError", "WorkerDirectory", "is_busy", "probe_forever"]


@dataclass
class _Assignment:
    node: str
    model_id: int
    span: LayerSpan
    live: bool = True


@dataclass
class _NodeStats:
    rtt_s: float = DEFAULT_RTT_S
    compute_per_layer_s: float = DEFAULT_COMPUTE_PER_LAYER_S
    load: int = 0
    down: bool = False
    rtt_samples: deque[float] = field(default_factory=lambda: deque(maxlen=RTT_WINDOW))


class WorkerDirectory:
    """Mutable registry of workers; every method is synchronous and cheap (call from the event loop)."""

    def __init__(self) -> None:
        self._assignments: dict[int, _Assignment] = {}
        self._endpoints: dict[str, str] = {}
        self._stats: dict[str, _NodeStats] = {}
        self._excluded: set[str] = set()
        self._tick = 0  # counts session opens of watched jobs
        self._opened: dict[int, dict[str, int]] = {}  # watched job -> node -> tick its first session opened
        #: out of routing for now, not for good (`coordinator.job_checks`: a verifier with recent faults)
        self.benched: Callable[[str], bool] = lambda _node: False

    # -- facts from the chain
    def set_endpoint(self, node: str, endpoint: str) -> None:
        self._endpoints[node.lower()] = endpoint.rstrip("/")

    def announce(self, assignment_id: int, node: str, model_id: int, span: LayerSpan) -> None:
        self._assignments[assignment_id] = _Assignment(node.lower(), model_id, span)
        self._stats.setdefault(node.lower(), _NodeStats())

    def release(self, assignment_id: int) -> None:
        a = self._assignments.get(assignment_id)
        if a is not None:
            a.live = False

    def exclude(self, node: str) -> None:
        """Never route through `node` again (slashed / jailed)."""
        self._excluded.add(node.lower())

    def is_excluded(self, node: str) -> bool:
        return node.lower() in self._excluded

    # -- liveness and measurements
    def mark_down(self, node: str, why: str = "") -> None:
        stats = self._stats.setdefault(node.lower(), _NodeStats())
        if not stats.down:
            log.warning("worker %s is down (%s): out of routing until /health answers", node, why or "failed")
        stats.down = True

    def is_down(self, node: str) -> bool:
        return self._stats.get(node.lower(), _NodeStats()).down

    def record_health(self, node: str, ok: bool, rtt_s: float | None = None) -> None:
        stats = self._stats.setdefault(node.lower(), _NodeStats())
        if ok:
            if stats.down:
                log.info("worker %s answers /health again: back in routing", node)
            stats.down = False
            if rtt_s is not None:
                stats.rtt_samples.append(rtt_s)
                stats.rtt_s = min(stats.rtt_samples)
        else:
            self.mark_down(node, "no /health answer")

    def record_step(self, node: str, seconds: float, layers: int) -> None:
        stats = self._stats.setdefault(node.lower(), _NodeStats())
        per_layer = max(seconds - stats.rtt_s, 0.0) / max(layers, 1)
        stats.compute_per_layer_s = (1 - EWMA) * stats.compute_per_layer_s + EWMA * per_layer

    def load(self, node: str) -> int:
        """Routed sessions this coordinator holds on `node` now."""
        return self._stats.get(node.lower(), _NodeStats()).load

    def mark_busy(self, node: str, why: str = "") -> None:
        """A worker answered 429 (its session limit) or 503 "full": it is busy, not dead. It stays routable (a
        job waits for it or a replica takes the work); it is never marked down for it."""
        log.info("worker %s is busy (%s): waiting for a session, not marking it down", node, why or "full")

    def add_load(self, node: str, delta: int) -> None:
        stats = self._stats.setdefault(node.lower(), _NodeStats())
        stats.load = max(0, stats.load + delta)

    # -- which sessions of admitted jobs are open (admission control reads it; see coordinator.admission)
    def watch_job(self, job_id: int) -> None:
        self._opened.setdefault(job_id, {})

    def forget_job(self, job_id: int) -> None:
        self._opened.pop(job_id, None)

    def session_opened(self, node: str, job_id: int) -> None:
        """A routed session of `job_id` opened on `node` (it reserved its memory there)."""
        opened = self._opened.get(job_id)
        if opened is not None:
            self._tick += 1
            opened.setdefault(node.lower(), self._tick)

    def tick(self) -> int:
        return self._tick

    def opened_by(self, job_id: int, node: str, tick: int) -> bool:
        """Whether a session of watched job `job_id` had opened on `node` at `tick`."""
        at = self._opened.get(job_id, {}).get(node.lower())
        return at is not None and at <= tick

    # -- views
    def endpoint(self, node: str) -> str | None:
        return self._endpoints.get(node.lower())

    def nodes(self) -> list[tuple[str, str]]:
        """(node, endpoint) of every node with a live assignment and a known endpoint."""
        live = {a.node for a in self._assignments.values() if a.live}
        return sorted((n, self._endpoints[n]) for n in live if n in self._endpoints)

    def live_endpoints(self) -> list[str]:
        """Endpoints of the workers with a live assignment that are not down (where to fetch model files)."""
        return [e for n, e in self.nodes() if not self.is_down(n)]

    def describe(self) -> list[dict[str, object]]:
        """Every known assignment with its node's state, for GET /v1/workers."""
        out: list[dict[str, object]] = []
        for aid, a in sorted(self._assignments.items()):
            stats = self._stats.get(a.node, _NodeStats())
            out.append(
                {
                    "assignment_id": aid,
                    "node": a.node,
                    "endpoint": self._endpoints.get(a.node),
                    "model_id": a.model_id,
                    "span": [a.span.start, a.span.end],
                    "live": a.live,
                    "down": stats.down,
                    "excluded": a.node in self._excluded,
                    "benched": self.benched(a.node),  # out of routing for now: recent verifier faults
                    "load": stats.load,
                    "rtt_s": stats.rtt_s,
                    "compute_per_layer_s": stats.compute_per_layer_s,
                }
            )
        return out

    def snapshot(self, model_id: int) -> list[WorkerInfo]:
        """Routable workers of `model_id`: live assignment, known endpoint, not down, not excluded nor benched."""
        out = []
        for a in self._assignments.values():
            if not a.live or a.model_id != model_id or a.node in self._excluded or self.benched(a.node):
                continue
            endpoint = self._endpoints.get(a.node)
            stats = self._stats.get(a.node, _NodeStats())
            if endpoint is None or stats.down:
                continue
            out.append(
                WorkerInfo(a.node, endpoint, a.span, stats.rtt_s, stats.compute_per_layer_s, stats.load)
            )
        return sorted(out, key=lambda w: (w.span.start, w.span.end, w.address))

    def serving(self, model_id: int, span: LayerSpan, *, besides: set[str]) -> set[str]:
        """Nodes with a live assignment of exactly `span`, other than `besides`, not excluded, down or not."""
        gone = self._excluded | {b.lower() for b in besides}
        return {
            a.node
            for a in self._assignments.values()
            if a.live and a.model_id == model_id and a.span == span and a.node not in gone
        }

    def replicas(self, model_id: int, span: LayerSpan, *, besides: set[str]) -> list[WorkerInfo]:
        """Routable workers serving exactly `span`, other than `besides`, cheapest first (address breaks ties)."""
        ws = [w for w in self.snapshot(model_id) if w.span == span and w.address not in besides]
        return sorted(
            ws, key=lambda w: (w.rtt_s + len(span) * w.compute_per_layer_s * (1 + w.load), w.address)
        )


async def probe_forever(
    directory: WorkerDirectory, health: Callable[[str, str], Awaitable[float]], interval_s: float
) -> None:
    """Probe every known worker's /health each `interval_s` seconds (until cancelled).

    `health(node, endpoint)` must return the round trip in seconds or raise on failure.
    """
    while True:
        nodes = directory.nodes()

        async def one(node: str, endpoint: str) -> None:
            try:
                rtt = await health(node, endpoint)
            except Exception as exc:  # noqa: BLE001 - any failure means "not healthy"
                log.debug("health probe of %s failed: %s", endpoint, exc)
                directory.record_health(node, False)
            else:
                directory.record_health(node, True, rtt)

        await asyncio.gather(*(one(n, e) for n, e in nodes))
        await asyncio.sleep(interval_s)
