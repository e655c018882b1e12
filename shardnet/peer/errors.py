"""Errors of the worker's HTTP API, one class per status code.

The server raises them and turns them into `{"error": message, "code"?: code}` responses;
`shardnet.peer.client.WorkerClient` raises the same classes from the responses it gets, so both sides share one
vocabulary. `code` is the machine-readable reason where a status has several (a 503 is `memory_full`,
`sessions_full` or `draining`): callers decide on it, never on the message's words.
"""

from __future__ import annotations

from shardnet.errors import ShardnetError

#: The machine-readable reasons of a refusal (the `code` of a worker's JSON error).
MEMORY_FULL = "memory_full"  # 503: the cache budget cannot hold this session's positions now (busy, retry)
SESSIONS_FULL = "sessions_full"  # 503 / 429: every session slot (or this coordinator's share) is taken (busy)
DRAINING = "draining"  # 503: the worker is shutting down and takes no new sessions (down for new work)
BUSY_CODES = frozenset({MEMORY_FULL, SESSIONS_FULL})


class WorkerAPIError(ShardnetError):
    """An HTTP API error: `status` is the HTTP status, the message says what to do next, `code` (or None) the
    machine-readable reason."""

    status: int = 500

    def __init__(
        self, message: str, *, status: int | None = None, url: str | None = None, code: str | None = None
    ) -> None:
        super().__init__(message)
        if status is not None:
            self.status = status
        self.message = message
        self.url = url
        self.code = code

    def __str__(self) -> str:
        where = f" ({self.url})" if self.url else ""
        return f"HTTP {self.status}{where}: {self.message}"


class BadRequest(WorkerAPIError):
    """The request is malformed (bad JSON, bad frame, missing header)."""

    status = 400


class TicketRejected(WorkerAPIError):
    """No valid ticket signed by a coordinator the chain knows."""

    status = 401


class SessionNotFound(WorkerAPIError):
    """Unknown (or closed, evicted, expired) session, or unknown file."""

    status = 404


class SessionConflict(WorkerAPIError):
    """Wrong start position, or a session id already used."""

    status = 409


class PayloadTooLarge(WorkerAPIError):
    """The body is larger than the worker accepts, or the session would exceed its max length."""

    status = 413


class InvalidTensor(WorkerAPIError):
    """The tensor has NaN/inf, the wrong shape or the wrong dtype, or the ticket names another span."""

    status = 422


class TooManySessions(WorkerAPIError):
    """This coordinator holds as many sessions as it may: close some first."""

    status = 429


class WorkerUnavailable(WorkerAPIError):
    """The worker is full or draining (shutting down): use another worker."""

    status = 503


class NextHopFailed(WorkerAPIError):
    """Push mode: the next worker failed or could not be reached (502). `url` names it."""

    status = 502


class WorkerUnreachable(WorkerAPIError):
    """The client could not reach the worker at all (connection refused, timeout)."""

    status = 0


_BY_STATUS: dict[int, type[WorkerAPIError]] = {
    cls.status: cls
    for cls in (
        BadRequest,
        TicketRejected,
        SessionNotFound,
        SessionConflict,
        PayloadTooLarge,
        InvalidTensor,
        TooManySessions,
        WorkerUnavailable,
        NextHopFailed,
    )
}


def error_for_status(
    status: int, message: str, url: str | None = None, code: str | None = None
) -> WorkerAPIError:
    """The typed error for an HTTP status (WorkerAPIError itself for statuses without a class)."""
    cls = _BY_STATUS.get(status, WorkerAPIError)
    return cls(message, status=status, url=url, code=code)
