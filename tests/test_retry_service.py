"""shardnet.retry (back-off, stop events) and shardnet.service (start, ready, drain, stop; signals), in process."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time

import pytest

from shardnet.retry import Backoff, aretry_until_stopped, retry_until_stopped
from shardnet.service import Lifecycle, run_service


def test_backoff_doubles_from_first_up_to_max() -> None:
    assert [Backoff(0.5, 3.0).delay(n) for n in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    with pytest.raises(ValueError, match="first_s <= max_s"):
        Backoff(2.0, 1.0)


def test_retry_returns_once_the_call_succeeds_and_reports_each_failure() -> None:
    calls: list[int] = []
    failures: list[tuple[int, str]] = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionError(f"down {len(calls)}")
        return "up"

    result = retry_until_stopped(
        flaky,
        stop=threading.Event(),
        backoff=Backoff(0.01, 0.02),
        what="t",
        on_failure=lambda n, exc: failures.append((n, str(exc))),
    )
    assert result == "up"
    assert failures == [(1, "down 1"), (2, "down 2")]


def test_a_stop_event_ends_the_retries_and_cuts_the_wait_short() -> None:
    stop = threading.Event()
    threading.Timer(0.2, stop.set).start()
    t0 = time.monotonic()

    def down() -> None:
        raise OSError("still down")

    assert retry_until_stopped(down, stop=stop, backoff=Backoff(60.0, 60.0), what="t") is None
    assert time.monotonic() - t0 < 5  # not the 60 s back-off


def test_async_retry_and_stop() -> None:
    async def main() -> tuple[int | None, int | None]:
        attempts = [0]

        async def flaky() -> int:
            attempts[0] += 1
            if attempts[0] < 2:
                raise ValueError("bad event")
            return attempts[0]

        stop = asyncio.Event()
        first = await aretry_until_stopped(flaky, stop=stop, backoff=Backoff(0.01, 0.01), what="t")

        async def down() -> int:
            raise OSError("down")

        asyncio.get_running_loop().call_later(0.2, stop.set)
        second = await aretry_until_stopped(down, stop=stop, backoff=Backoff(60.0, 60.0), what="t")
        return first, second

    assert asyncio.run(asyncio.wait_for(main(), 10)) == (2, None)


class Recorder:
    """A service that records its lifecycle calls; `fail_in` names the call that raises."""

    def __init__(self, fail_in: str = "") -> None:
        self.calls: list[str] = []
        self.fail_in = fail_in

    async def _record(self, name: str) -> None:
        self.calls.append(name)
        if name == self.fail_in:
            raise RuntimeError(f"{name} failed")

    async def start(self) -> None:
        await self._record("start")

    async def drain(self) -> None:
        await self._record("drain")

    async def stop(self) -> None:
        await self._record("stop")


def test_service_runs_start_ready_drain_stop_in_order() -> None:
    service = Recorder()

    async def main() -> Lifecycle:
        lifecycle = Lifecycle("t")
        runner = asyncio.ensure_future(run_service(service, lifecycle, signals=()))
        await asyncio.wait_for(lifecycle.ready.wait(), 5)
        assert lifecycle.phase == "ready" and service.calls == ["start"]
        lifecycle.request_stop()
        await asyncio.wait_for(runner, 5)
        return lifecycle

    lifecycle = asyncio.run(main())
    assert service.calls == ["start", "drain", "stop"]
    assert lifecycle.phase == "stopped"


def test_a_failed_start_still_stops_and_is_raised() -> None:
    service = Recorder(fail_in="start")
    lifecycle = Lifecycle("t")
    with pytest.raises(RuntimeError, match="start failed"):
        asyncio.run(run_service(service, lifecycle, signals=()))
    assert service.calls == ["start", "stop"]
    assert not lifecycle.ready.is_set() and lifecycle.phase == "stopped"


def test_sigterm_drains_and_stops() -> None:
    service = Recorder()

    async def main() -> None:
        lifecycle = Lifecycle("t")
        runner = asyncio.ensure_future(run_service(service, lifecycle, signals=(signal.SIGTERM,)))
        await asyncio.wait_for(lifecycle.ready.wait(), 5)
        os.kill(os.getpid(), signal.SIGTERM)
        await asyncio.wait_for(runner, 5)

    previous = signal.getsignal(signal.SIGTERM)
    try:
        asyncio.run(main())
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert service.calls == ["start", "drain", "stop"]


def test_what_starting_loaded_is_out_of_the_collectors_reach_once_ready() -> None:
    import gc

    service = Recorder()
    gc.unfreeze()

    async def main() -> int:
        lifecycle = Lifecycle("t")
        runner = asyncio.ensure_future(run_service(service, lifecycle, signals=()))
        await asyncio.wait_for(lifecycle.ready.wait(), 5)
        frozen = (
            gc.get_freeze_count()
        )  # a full collection no longer walks these (0.2-0.4 s with torch loaded)
        lifecycle.request_stop()
        await asyncio.wait_for(runner, 5)
        return frozen

    try:
        assert asyncio.run(main()) > 1000
    finally:
        gc.unfreeze()
