"""How long this process waited for the chain: every registry read and transaction, timed by function name.

A coordinator reports it in `/health` (`chain_wait`), so a benchmark can tell what share of a job's wall time
went to the chain (submitJob, settleJobs, reads) rather than to the workers (`scripts/bench.py concurrency`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager


class ChainClock:
    """Counts and seconds per (kind, function), summed over every thread of the process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._totals: dict[tuple[str, str], tuple[int, float]] = {}

    @contextmanager
    def timed(self, kind: str, name: str) -> Iterator[None]:
        """Time the block as one `kind` ("tx" or "read") of function `name`, whether it succeeds or not."""
        t0 = time.perf_counter()
        try:
            yield
        finally:
            seconds = time.perf_counter() - t0
            with self._lock:
                count, total = self._totals.get((kind, name), (0, 0.0))
                self._totals[(kind, name)] = (count + 1, total + seconds)

    def snapshot(self) -> dict[str, dict[str, list[float]]]:
        """`{"tx": {name: [count, seconds]}, "read": {...}}` so far."""
        out: dict[str, dict[str, list[float]]] = {"tx": {}, "read": {}}
        with self._lock:
            for (kind, name), (count, seconds) in sorted(self._totals.items()):
                out.setdefault(kind, {})[name] = [count, round(seconds, 6)]
        return out


#: the process's clock (registry reads and transactions record here)
CHAIN_CLOCK = ChainClock()
