"""A timeline of every step for latency work: with `SHARDNET_TRACE=<file>` in its environment, a worker or a
coordinator appends one line `<unix time> <pid> <event>` to that file at each mark on a step's path (the
workers and the coordinator of one machine share the file: a line is one append). Off (the default) a mark is
one test of a module global. `scripts/bench.py waterfall` reads it back into the median time of each segment
of a token's path.

Marks: a worker's `recv` (a step's request reached its handler), `compute` / `computed` (its model forward),
`finished` (encoded, hashed, fingerprinted and recorded: the output may leave), for a batched forward of
several sessions `batch:<n>` / `batched` / `batch_finished` (the same three points for the whole batch),
`send` (forwarded to the next worker) or `answer` (the last worker answers the coordinator directly); the coordinator's `step` (sent into
the chain), `answered` (the direct answer arrived) and `token` (the forward returned: the token is sampled);
in every traced process, `gc2:start` / `gc2:stop` around each full garbage collection. A mark has no spaces.
"""

from __future__ import annotations

import os
import time
from typing import TextIO

ENV = "SHARDNET_TRACE"


def _open() -> TextIO | None:
    path = os.environ.get(ENV)
    return open(path, "a", buffering=1, encoding="ascii") if path else None  # noqa: SIM115 - open for the process


_FILE = _open()


def mark(event: str) -> None:
    """Append `event` with the time and this process's id, when tracing is on."""
    if _FILE is not None:
        _FILE.write(f"{time.time():.6f} {os.getpid()} {event}\n")


def _collections(phase: str, info: dict[str, int]) -> None:
    if info.get("generation") == 2:
        mark(f"gc2:{phase}")


# full garbage collections walk the whole heap (~0.2 s with torch loaded): on the timeline too
if _FILE is not None:
    import gc

    gc.callbacks.append(_collections)
