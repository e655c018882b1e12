"""Session tickets: EIP-712 typed data in the registry's domain, signed with a real eth-account key and checked by recovery."""

from __future__ import annotations

import copy

import pytest
from eth_account import Account

from shardnet.span import LayerSpan
from shardnet.wire.tickets import TicketError, sign_ticket, ticket_proof, ticket_span, verify_ticket

COORD = Account.from_key("0x" + "11" * 32)
WORKER = Account.from_key("0x" + "22" * 32).address
OTHER = Account.from_key("0x" + "33" * 32)
NOW = 1_800_000_000
REGISTRY = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
DOMAIN = {"chain_id": 31337, "registry": REGISTRY}


def _ticket(**kw: object) -> dict:
    args: dict = dict(
        worker=WORKER,
        session_id="sess-1",
        job_id=7,
        span=LayerSpan(0, 10),
        max_positions=600,
        expires_at=NOW + 60,
    )
    args.update(kw)
    return sign_ticket(COORD, **args, **DOMAIN)


def test_valid_ticket_recovers_the_coordinator() -> None:
    t = _ticket()
    assert verify_ticket(t, worker=WORKER, now=NOW, **DOMAIN) == COORD.address
    assert (
        verify_ticket(t, worker=WORKER.lower(), now=NOW, expected_signer=COORD.address, **DOMAIN)
        == COORD.address
    )
    assert ticket_span(t) == LayerSpan(0, 10)
    assert t["span"] == [0, 10] and t["worker"] == WORKER


def test_span_as_a_pair_and_lowercase_worker() -> None:
    t = sign_ticket(
        COORD,
        worker=WORKER.lower(),
        session_id="s",
        job_id=0,
        span=(3, 5),
        max_positions=64,
        expires_at=NOW,
        **DOMAIN,
    )
    assert t["worker"] == WORKER and t["span"] == [3, 5]
    assert verify_ticket(t, worker=WORKER, now=NOW, **DOMAIN) == COORD.address


def test_signature_is_deterministic_over_canonical_json() -> None:
    assert _ticket() == _ticket()
    assert _ticket()["signature"] != _ticket(job_id=8)["signature"]


def test_altered_fields_recover_someone_else() -> None:
    t = _ticket()
    for field, value in [
        ("job_id", 8),
        ("span", [0, 30]),
        ("session_id", "sess-2"),
        ("expires_at", NOW + 10**6),
        ("max_positions", 10**6),
    ]:
        forged = {**t, field: value}
        assert verify_ticket(forged, worker=WORKER, now=NOW, **DOMAIN) != COORD.address
        with pytest.raises(TicketError, match="not by the coordinator"):
            verify_ticket(forged, worker=WORKER, now=NOW, expected_signer=COORD.address, **DOMAIN)


def test_foreign_signer_is_reported() -> None:
    t = sign_ticket(
        OTHER,
        worker=WORKER,
        session_id="s",
        job_id=1,
        span=(0, 1),
        max_positions=64,
        expires_at=NOW + 5,
        **DOMAIN,
    )
    assert verify_ticket(t, worker=WORKER, now=NOW, **DOMAIN) == OTHER.address
    with pytest.raises(TicketError, match="not by the coordinator"):
        verify_ticket(t, worker=WORKER, now=NOW, expected_signer=COORD.address, **DOMAIN)


def test_wrong_worker_and_expiry() -> None:
    t = _ticket()
    with pytest.raises(TicketError, match="not this worker"):
        verify_ticket(t, worker=OTHER.address, now=NOW, **DOMAIN)
    with pytest.raises(TicketError, match="expired"):
        verify_ticket(t, worker=WORKER, now=NOW + 61, **DOMAIN)
    assert verify_ticket(t, worker=WORKER, now=NOW + 60, **DOMAIN) == COORD.address


@pytest.mark.parametrize(
    "mutate,match",
    [
        (lambda t: t.pop("signature"), "missing fields"),
        (lambda t: t.update(extra=1), "unknown fields"),
        (lambda t: t.update(format="other/1"), "format"),
        (lambda t: t.update(job_id="7"), "wrong types"),
        (lambda t: t.update(span=[5, 2]), "span is invalid"),
        (lambda t: t.update(span=[1]), "wrong types"),
        (lambda t: t.update(signature="0x1234"), "signature is invalid"),
        (lambda t: t.update(signature="nothex"), "signature is invalid"),
        (lambda t: t.pop("max_positions"), "missing fields"),  # a ticket must bound the positions billed
        (lambda t: t.update(max_positions=0), "wrong types"),
        (lambda t: t.update(max_positions=2**32), "wrong types"),
        (lambda t: t.update(max_positions=True), "wrong types"),
        (lambda t: t.update(format="shardnet-ticket/2"), "format"),
    ],
)
def test_malformed_tickets(mutate, match: str) -> None:  # type: ignore[no-untyped-def]
    t = copy.deepcopy(_ticket())
    mutate(t)
    with pytest.raises(TicketError, match=match):
        verify_ticket(t, worker=WORKER, now=NOW, **DOMAIN)


def test_not_a_dict() -> None:
    with pytest.raises(TicketError, match="JSON object"):
        verify_ticket([1, 2], worker=WORKER, now=NOW, **DOMAIN)  # type: ignore[arg-type]


def test_sign_refuses_an_unbounded_ticket() -> None:
    for bad in (0, -1, 2**32):
        with pytest.raises(TicketError, match="max_positions"):
            _ticket(max_positions=bad)


def test_sign_refuses_a_bad_worker_address() -> None:
    with pytest.raises(TicketError, match="not an Ethereum address"):
        sign_ticket(
            COORD,
            worker="nobody",
            session_id="s",
            job_id=1,
            span=(0, 1),
            max_positions=64,
            expires_at=NOW,
            **DOMAIN,
        )


def test_a_ticket_for_another_chain_or_registry_recovers_someone_else() -> None:
    t = _ticket()
    assert verify_ticket(t, worker=WORKER, now=NOW, **DOMAIN) == COORD.address
    other_chain = verify_ticket(t, worker=WORKER, now=NOW, chain_id=1, registry=REGISTRY)
    other_registry = verify_ticket(t, worker=WORKER, now=NOW, chain_id=31337, registry=OTHER.address)
    assert COORD.address not in (other_chain, other_registry)
    with pytest.raises(TicketError, match="not by the coordinator"):
        verify_ticket(t, worker=WORKER, now=NOW, chain_id=1, registry=REGISTRY, expected_signer=COORD.address)


def test_ticket_proof_is_the_contract_tuple() -> None:
    t = _ticket()
    session_id, max_positions, expires_at, r, vs = ticket_proof(t)
    assert (session_id, max_positions, expires_at) == ("sess-1", 600, NOW + 60)
    assert "0x" + (r + vs).hex() == t["signature"] and len(r) == len(vs) == 32
