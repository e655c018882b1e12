"""One retry helper for the loops that must outlive a flaky node: call a function until it succeeds,
waiting `first_s * 2**(n-1)` (capped at `max_s`) after the n-th consecutive failure, and give up only
when a stop event is set (the wait is cut short by it). Built on tenacity.

    backoff = Backoff(first_s=0.5, max_s=30.0)
    polled = retry_until_stopped(watcher.poll_once, stop=stop_event, backoff=backoff, what="watcher")
    # in a coroutine, with an asyncio.Event:
    polled = await aretry_until_stopped(poll, stop=stop, backoff=backoff, what="watcher")

Both return the function's result, or None when the stop event was set while it kept failing.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import tenacity

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Called after each failed attempt with the number of consecutive failures and the exception.
FailureHook = Callable[[int, BaseException], None]


@dataclass(frozen=True)
class Backoff:
    """Exponential back-off: `first_s` after the first failure, doubling, never more than `max_s`."""

    first_s: float
    max_s: float

    def __post_init__(self) -> None:
        if self.first_s <= 0 or self.max_s < self.first_s:
            raise ValueError(f"need 0 < first_s <= max_s, got first_s={self.first_s}, max_s={self.max_s}")

    def delay(self, failures: int) -> float:
        """Seconds to wait after `failures` consecutive failures (failures >= 1)."""
        return float(self.wait()(_state_after(failures)))

    def wait(self) -> tenacity.wait.wait_base:
        return tenacity.wait_exponential(
            multiplier=self.first_s, exp_base=2, min=self.first_s, max=self.max_s
        )


def _state_after(failures: int) -> tenacity.RetryCallState:
    state = tenacity.RetryCallState(retry_object=tenacity.Retrying(), fn=None, args=(), kwargs={})
    state.attempt_number = failures
    return state


def _before_sleep(what: str, on_failure: FailureHook | None) -> Callable[[tenacity.RetryCallState], None]:
    def hook(state: tenacity.RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome is not None else None
        assert exc is not None
        delay = state.next_action.sleep if state.next_action is not None else 0.0
        log.warning(
            "%s failed (%s: %s); retry %d in %.2f s",
            what,
            type(exc).__name__,
            exc,
            state.attempt_number,
            delay,
        )
        log.debug("%s failure %d", what, state.attempt_number, exc_info=exc)
        if on_failure is not None:
            on_failure(state.attempt_number, exc)

    return hook


def retry_until_stopped(
    fn: Callable[[], T],
    *,
    stop: threading.Event,
    backoff: Backoff,
    what: str,
    on_failure: FailureHook | None = None,
) -> T | None:
    """Call `fn` until it returns (any Exception is retried after the back-off); None if `stop` was set first.

    The wait between attempts ends early when `stop` is set; `what` names the operation in the warnings.
    """

    def sleep(seconds: float) -> None:
        stop.wait(seconds)

    retrying = tenacity.Retrying(
        retry=tenacity.retry_if_exception_type(Exception),
        wait=backoff.wait(),
        stop=lambda _state: stop.is_set(),
        sleep=sleep,
        before_sleep=_before_sleep(what, on_failure),
        retry_error_callback=lambda _state: None,
    )
    return retrying(fn)


async def aretry_until_stopped(
    fn: Callable[[], Awaitable[T]],
    *,
    stop: asyncio.Event,
    backoff: Backoff,
    what: str,
    on_failure: FailureHook | None = None,
) -> T | None:
    """The coroutine form of `retry_until_stopped`, for an `asyncio.Event`."""

    async def sleep(seconds: float) -> None:
        try:
            await asyncio.wait_for(stop.wait(), seconds)
        except TimeoutError:
            pass

    retrying = tenacity.AsyncRetrying(
        retry=tenacity.retry_if_exception_type(Exception),
        wait=backoff.wait(),
        stop=lambda _state: stop.is_set(),
        sleep=sleep,
        before_sleep=_before_sleep(what, on_failure),
        retry_error_callback=lambda _state: None,
    )
    result: T | None = await retrying(fn)
    return result
