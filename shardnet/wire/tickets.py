"""Session tickets: a coordinator's signed permission for a worker to open one inference session.

A ticket is a JSON object of these fields::

    {"format": "shardnet-ticket/3", "worker": "0xChecksum…", "session_id": "…", "job_id": 7,
     "span": [0, 10], "max_positions": 600, "expires_at": 1767225600, "signature": "0x<r><vs>"}

The signature is the coordinator's EIP-712 signature (compact, EIP-2098) over the struct
``Ticket(address worker,string sessionId,uint256 jobId,uint32 start,uint32 end,uint32 maxPositions,uint64 expiresAt)``
in the
registry's domain (chain id + registry address, see ``shardnet.wire.eip712``), so a ticket for one deployment
never verifies on another. ``verify_ticket`` recovers the signer; the worker then checks on chain that the
signer is the job's coordinator. ``max_positions`` bounds the token positions the worker may compute and bill for
the job (the coordinator sets it to prompt length + max tokens); a ticket without it is refused. The registry checks
the same signature, the bound and the expiry (plus its dispute window) when a worker posts its own commitment
(``ticket_proof`` gives the contract's TicketProof).
"""

from __future__ import annotations

import time
from typing import Any

from eth_account.signers.local import LocalAccount
from eth_utils import is_address, to_checksum_address

from shardnet.errors import ShardnetError
from shardnet.span import LayerSpan
from shardnet.wire.eip712 import CompactSignature, Domain, recover_struct, sign_struct

TICKET_FORMAT = "shardnet-ticket/3"
_FIELDS = ("format", "worker", "session_id", "job_id", "span", "max_positions", "expires_at")
MAX_POSITIONS_LIMIT = 2**32 - 1  # uint32 in the EIP-712 struct


class TicketError(ShardnetError):
    """A session ticket is malformed, not signed by its signer, meant for another worker, or expired."""


def _message(fields: dict[str, Any]) -> dict[str, Any]:
    start, end = fields["span"]
    return {
        "worker": fields["worker"],
        "sessionId": fields["session_id"],
        "jobId": fields["job_id"],
        "start": start,
        "end": end,
        "maxPositions": fields["max_positions"],
        "expiresAt": fields["expires_at"],
    }


def _span_list(span: LayerSpan | tuple[int, int] | list[int]) -> list[int]:
    if isinstance(span, LayerSpan):
        return [span.start, span.end]
    a, b = span
    checked = LayerSpan(int(a), int(b))
    return [checked.start, checked.end]


def sign_ticket(
    account: LocalAccount,
    *,
    worker: str,
    session_id: str,
    job_id: int,
    span: LayerSpan | tuple[int, int] | list[int],
    max_positions: int,
    expires_at: int,
    chain_id: int,
    registry: str,
) -> dict[str, Any]:
    """A ticket for ``worker`` to serve ``span`` in session ``session_id`` of job ``job_id`` until ``expires_at``,
    computing (and billing) at most ``max_positions`` token positions, valid only for the registry at ``registry``
    on chain ``chain_id``."""
    if not is_address(worker):
        raise TicketError(f"worker {worker!r} is not an Ethereum address")
    if not 1 <= int(max_positions) <= MAX_POSITIONS_LIMIT:
        raise TicketError(f"max_positions {max_positions} must be 1 to {MAX_POSITIONS_LIMIT}")
    fields: dict[str, Any] = {
        "format": TICKET_FORMAT,
        "worker": to_checksum_address(worker),
        "session_id": str(session_id),
        "job_id": int(job_id),
        "span": _span_list(span),
        "max_positions": int(max_positions),
        "expires_at": int(expires_at),
    }
    signature = sign_struct(account, Domain(chain_id, registry), "Ticket", _message(fields))
    return {**fields, "signature": signature.hex()}


def ticket_span(ticket: dict[str, Any]) -> LayerSpan:
    """The layer span a (verified) ticket grants."""
    a, b = ticket["span"]
    return LayerSpan(int(a), int(b))


def _check_shape(ticket: object) -> dict[str, Any]:
    if not isinstance(ticket, dict):
        raise TicketError("ticket must be a JSON object; ask the coordinator for a new session ticket")
    missing = [k for k in (*_FIELDS, "signature") if k not in ticket]
    extra = sorted(set(ticket) - {*_FIELDS, "signature"})
    if missing or extra:
        raise TicketError(f"ticket has missing fields {missing} or unknown fields {extra}")
    if ticket["format"] != TICKET_FORMAT:
        raise TicketError(f"ticket format {ticket['format']!r} is not {TICKET_FORMAT!r}")
    span = ticket["span"]
    ok = (
        isinstance(ticket["worker"], str)
        and isinstance(ticket["session_id"], str)
        and type(ticket["job_id"]) is int
        and type(ticket["expires_at"]) is int
        and type(ticket["max_positions"]) is int
        and 1 <= ticket["max_positions"] <= MAX_POSITIONS_LIMIT
        and isinstance(ticket["signature"], str)
        and isinstance(span, list)
        and len(span) == 2
        and all(type(v) is int for v in span)
    )
    if not ok:
        raise TicketError(
            "ticket fields have wrong types (worker, session_id, signature: strings; "
            f"job_id, expires_at: integers; max_positions: 1 to {MAX_POSITIONS_LIMIT}; span: [start, end])"
        )
    try:
        ticket_span(ticket)
    except ValueError as exc:
        raise TicketError(f"ticket span is invalid: {exc}") from exc
    return ticket


def ticket_proof(ticket: dict[str, Any]) -> tuple[str, int, int, bytes, bytes]:
    """The contract's TicketProof tuple (sessionId, maxPositions, expiresAt, r, vs) of a ticket."""
    t = _check_shape(ticket)
    signature = CompactSignature.from_hex(t["signature"])
    return t["session_id"], t["max_positions"], t["expires_at"], signature.r, signature.vs


def ticket_max_positions(ticket: dict[str, Any]) -> int:
    """The token positions a (verified) ticket lets its worker compute and bill for the job."""
    return int(ticket["max_positions"])


def verify_ticket(
    ticket: dict[str, Any],
    *,
    worker: str,
    chain_id: int,
    registry: str,
    now: float | None = None,
    expected_signer: str | None = None,
) -> str:
    """Check ``ticket`` for ``worker`` and return the checksum address of its signer.

    Raises ``TicketError`` when the ticket is malformed, its signature does not recover, it names
    another worker, or it expired (``expires_at`` < ``now``, default the current time). A ticket whose
    fields were altered still recovers, to some other address: the caller must check that the signer
    is a coordinator (on chain), or pass ``expected_signer`` to have it checked here. A ticket signed for another
    chain or registry recovers to another address too.
    """
    t = _check_shape(ticket)
    fields = {k: t[k] for k in _FIELDS}
    if not is_address(t["worker"]):
        raise TicketError(f"ticket worker {t['worker']!r} is not an Ethereum address")
    try:
        signature = CompactSignature.from_hex(t["signature"])
        signer = recover_struct(Domain(chain_id, registry), "Ticket", _message(fields), signature)
    except ValueError as exc:
        raise TicketError(
            f"ticket signature is invalid ({exc}); ask the coordinator for a new ticket"
        ) from exc
    if not is_address(t["worker"]) or to_checksum_address(t["worker"]) != to_checksum_address(worker):
        raise TicketError(
            f"ticket is for worker {t['worker']}, not this worker {to_checksum_address(worker)}"
        )
    current = time.time() if now is None else now
    if t["expires_at"] < current:
        raise TicketError(
            f"ticket expired at {t['expires_at']} (now {int(current)}); ask the coordinator for a new one"
        )
    signer = to_checksum_address(signer)
    if expected_signer is not None and signer != to_checksum_address(expected_signer):
        raise TicketError(f"ticket is signed by {signer}, not by the coordinator {expected_signer}")
    return signer
