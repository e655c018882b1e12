"""One lifecycle for the long-running roles (worker, coordinator): start, ready, drain, stop.

A role implements `Service` (three coroutines); `run_service` drives it:

    start()  -> set up and begin serving (listen, follow the chain); when it returns the service is ready
    ...         wait until a stop is requested: SIGTERM/SIGINT, or `Lifecycle.request_stop()`
    drain()  -> stop taking new work and let the work in flight finish (bounded by the role's grace period)
    stop()   -> release everything (always runs, also when start or drain failed)

    lifecycle = Lifecycle("worker")
    await run_service(WorkerService(node), lifecycle)   # returns after stop()
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
from typing import Protocol

log = logging.getLogger(__name__)

#: The signals that ask a service to drain and stop.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Service(Protocol):
    """What a role provides to `run_service`."""

    async def start(self) -> None:
        """Set up and begin serving; return once the service is ready."""

    async def drain(self) -> None:
        """Stop taking new work and let the work in flight finish."""

    async def stop(self) -> None:
        """Release everything; must work after a failed or partial start."""


class Lifecycle:
    """Where a service is in its life, and the way to ask it to stop (from a signal, a test, or the service)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.ready = asyncio.Event()
        self.stopping = asyncio.Event()
        self.phase = "created"  # created -> starting -> ready -> draining -> stopped

    def request_stop(self) -> None:
        """Ask the service to drain and stop (safe to call more than once, from the event loop)."""
        if not self.stopping.is_set():
            log.info("%s: stop requested", self.name)
        self.stopping.set()


async def run_service(
    service: Service, lifecycle: Lifecycle, *, signals: tuple[signal.Signals, ...] = STOP_SIGNALS
) -> None:
    """Start `service`, mark it ready, wait for a stop request (or one of `signals`), drain, stop.

    Signal handlers are installed only for the duration of the call (pass `signals=()` when running
    outside the main thread, e.g. in a test).
    """
    loop = asyncio.get_running_loop()
    installed: list[signal.Signals] = []
    for sig in signals:
        loop.add_signal_handler(sig, lifecycle.request_stop)
        installed.append(sig)
    try:
        lifecycle.phase = "starting"
        await service.start()
        # what starting loaded (torch, transformers, web3, the model: ~0.5 M objects) stays for the process's life:
        # out of the collector's reach, a full collection no longer walks it (0.2-0.4 s each, a stalled step)
        gc.freeze()
        lifecycle.phase = "ready"
        lifecycle.ready.set()
        log.info("%s: ready", lifecycle.name)
        await lifecycle.stopping.wait()
        lifecycle.phase = "draining"
        log.info("%s: draining", lifecycle.name)
        await service.drain()
    finally:
        lifecycle.stopping.set()
        try:
            await service.stop()
        finally:
            lifecycle.phase = "stopped"
            for sig in installed:
                loop.remove_signal_handler(sig)
            log.info("%s: stopped", lifecycle.name)
