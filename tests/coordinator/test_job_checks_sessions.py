"""Which hops the after-the-fact check may judge: only one session's worth of relayed steps that its worker signed.

A failover or a re-run that comes back to the same (node, span) reuses the job's hop index, so that hop's relayed
steps then belong to two sessions, each computed on its own KV cache. One prefill-style pass over all of them would
replay them as one sequence and could find an honest node guilty: such a hop is not judged."""

from __future__ import annotations

import asyncio

from eth_account import Account

from coordinator.hop_facts import unjudgeable
from coordinator.hops import JobHops
from shardnet.chain.commitments import sign_commitment
from shardnet.span import LayerSpan
from shardnet.wire.eip712 import Domain

WORKER = Account.from_key("0x" + "11" * 32)
DOMAIN = Domain(31337, "0x" + "22" * 20)
SPAN = LayerSpan(0, 2)


def _hops(relayed: int, signed_steps: int, sessions: int) -> JobHops:
    hops = JobHops(7, [(WORKER.address, SPAN)], 64)
    loop = asyncio.new_event_loop()
    try:
        hops.relayed[0] = [(b"in", b"out", loop.create_future()) for _ in range(relayed)]
    finally:
        loop.close()
    signed = sign_commitment(
        WORKER, DOMAIN, job_id=7, span=SPAN, positions=10, steps=signed_steps, root=b"\x01" * 32
    )
    hops.handed(0, signed)
    if sessions:
        hops.sessions[0] = sessions
    return hops


def test_one_session_whose_signed_steps_were_all_relayed_is_judged() -> None:
    assert unjudgeable(_hops(relayed=5, signed_steps=5, sessions=1), 0) is None


def test_a_hop_that_served_two_sessions_of_the_job_is_not_judged_as_one_sequence() -> None:
    why = unjudgeable(_hops(relayed=8, signed_steps=8, sessions=2), 0)
    assert why is not None and "2 sessions" in why


def test_steps_not_relayed_or_no_commitment_are_not_judged() -> None:
    assert "3 steps relayed, 5 signed" in (unjudgeable(_hops(relayed=3, signed_steps=5, sessions=1), 0) or "")
    no_commitment = JobHops(7, [(WORKER.address, SPAN)], 64)
    assert unjudgeable(no_commitment, 0) == "no signed commitment was handed over"
