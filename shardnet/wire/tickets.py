"""Session tickets: a coordinator's signed permission for a worker to open one inference session.

A ticket is the canonical JSON (sorted keys, no spaces) of these fields, signed with EIP-191
(``personal_sign``) by the coordinator's key::

    {"format": "shardnet-ticket/1", "worker": "0xChecksum…", "session_id": "…", "job_id": 7,
     "span": [0, 10], "expires_at": 1767225600}

The ``signature`` (0x-hex) is added beside those fields. ``verify_ticket`` recovers the signer; the
worker then checks on chain that the signer is a registered coordinator.
"""

from __future__ import annotations

import json
import time
from typing import Any

from eth_account import Account
from eth_account.messages import encode_defunct
from eth_account.signers.local import LocalAccount
from eth_utils import is_address, to_checksum_address

from shardnet.errors import ShardnetError
from shardnet.span import LayerSpan

TICKET_FORMAT = "shardnet-ticket/1"
_FIELDS = ("format", "worker", "session_id", "job_id", "span", "expires_at")


class TicketError(ShardnetError):
    """A session ticket is malformed, not signed by its signer, meant for another worker, or expired."""


def _canonical(fields: dict[str, Any]) -> bytes:
    return json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


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
    expires_at: int,
) -> dict[str, Any]:
    """A ticket for ``worker`` to serve ``span`` in session ``session_id`` of job ``job_id`` until ``expires_at``."""
    if not is_address(worker):
        raise TicketError(f"worker {worker!r} is not an Ethereum address")
    fields: dict[str, Any] = {
        "format": TICKET_FORMAT,
        "worker": to_checksum_address(worker),
        "session_id": str(session_id),
        "job_id": int(job_id),
        "span": _span_list(span),
        "expires_at": int(expires_at),
    }
    signed = account.sign_message(encode_defunct(primitive=_canonical(fields)))
    return {**fields, "signature": "0x" + bytes(signed.signature).hex()}


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
        and isinstance(ticket["signature"], str)
        and isinstance(span, list)
        and len(span) == 2
        and all(type(v) is int for v in span)
    )
    if not ok:
        raise TicketError(
            "ticket fields have wrong types (worker, session_id, signature: strings; "
            "job_id, expires_at: integers; span: [start, end])"
        )
    try:
        ticket_span(ticket)
    except ValueError as exc:
        raise TicketError(f"ticket span is invalid: {exc}") from exc
    return ticket


def verify_ticket(
    ticket: dict[str, Any], *, worker: str, now: float | None = None, expected_signer: str | None = None
) -> str:
    """Check ``ticket`` for ``worker`` and return the checksum address of its signer.

    Raises ``TicketError`` when the ticket is malformed, its signature does not recover, it names
    another worker, or it expired (``expires_at`` < ``now``, default the current time). A ticket whose
    fields were altered still recovers, to some other address: the caller must check that the signer
    is a coordinator (on chain), or pass ``expected_signer`` to have it checked here.
    """
    t = _check_shape(ticket)
    fields = {k: t[k] for k in _FIELDS}
    try:
        signer = Account.recover_message(
            encode_defunct(primitive=_canonical(fields)), signature=t["signature"]
        )
    except Exception as exc:  # eth-account raises several types for a bad signature
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
