"""A drawn verifier cannot dodge a check with "cannot check" (a 401 or 422 to a valid request), on a real anvil
registry with real worker servers (the harness of tests/coordinator/test_disputes.py: five nodes on layers 0:2, the
accused perturbs its outputs, so every drawn verifier is asked and the 3 honest ones slash).

The registry draws a node only when one of its assignments covering the hop was bonded at the job's close
(`ShardEvidence.drawVerifiers`). A 401 or 422 from it to a valid check is therefore a refusal and a fault, however it
holds its spans now: two live assignments with one endpoint serving the other one, a release after the draw was
public, a re-announcement to other layers, or a second span announced after the close. Each was "cannot check"
before (neither a verdict nor a fault, its stake weighing as innocent in `slash`): a free shield for a cheat.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from eth_account.signers.local import LocalAccount

from shardnet.span import LayerSpan
from tests.coordinator.test_disputes import Setup, _apps, _dispute, _server
from tests.coordinator.test_disputes import blocks as blocks  # noqa: F401  (the module's fixtures)
from tests.coordinator.test_disputes import setup as setup  # noqa: F401

OTHER = LayerSpan(2, 4)  # a span of the model that does not cover the checked hop (SPAN, 0:2)


def _assignment(s: Setup, node: LocalAccount) -> int:
    """`node`'s one live assignment of the model."""
    [aid] = [
        a for a in s.owner.live_assignments(s.model_id) if s.owner.get_assignment(a).node == node.address
    ]
    return aid


def _run(
    s: Setup, blocks: dict[torch.dtype, Any], dodger: LocalAccount, after_close: Callable[[], Any]
) -> Any:
    """The accused (nodes[0]) cheats; `dodger` (nodes[1]) runs a real worker serving OTHER, so it answers a check of
    SPAN with a 401 (the ticket names layers it does not serve); the other three are honest. Returns its answer
    and the outcome."""
    accused, honest = s.nodes[0], s.nodes[2:]
    servers = {accused.address: _server(s, accused, blocks[torch.float32], perturb=0.05).app()}
    servers |= _apps(s, blocks, honest)
    servers[dodger.address] = _server(s, dodger, blocks[torch.float32], span=OTHER).app()
    outcome, _job_id, _ = _dispute(s, blocks, accused, servers, "float32", after_close=after_close)
    [answer] = [a for a in outcome.answers if a.verifier == dodger.address]
    return answer, outcome


def test_a_verifier_holding_two_spans_cannot_dodge_the_check_of_the_one_it_does_not_serve(
    setup: Setup, blocks: dict[torch.dtype, Any]
) -> None:
    """A node holds two live assignments of the model, 0:2 and 2:4, and registers one endpoint, whose worker serves
    2:4. It is drawn for the accused's 0:2 hop (its 0:2 assignment was bonded at the close) and answers 401. The
    coordinator cannot tell which span answered; it need not: the node announced 0:2, so 0:2's checks are its to
    do. A refusal and a fault (it was "cannot check": the directory saw two spans and gave up)."""
    s = setup
    dodger = s.nodes[1]
    s.registry_for(dodger).announce_shard(s.model_id, OTHER)  # before the job: two live assignments
    answer, outcome = _run(s, blocks, dodger, after_close=lambda: None)
    assert answer.guilty is None and "HTTP 401" in answer.note, answer
    assert answer.fault and "cannot check" not in answer.note, answer
    assert outcome.slashed, outcome


@pytest.mark.parametrize("move", ["release", "reannounce", "add_span"])
def test_a_verifier_cannot_dodge_a_check_by_changing_its_spans_after_the_close(
    setup: Setup, blocks: dict[torch.dtype, Any], move: str
) -> None:
    """The draw is public two blocks after the close (blockhash(closeBlock + 2)); a drawn node that then releases its
    0:2 assignment (`release`), re-announces to 2:4 (`reannounce`) or adds 2:4 beside it (`add_span`), and answers
    401 from a worker on 2:4, is still drawn (the registry draws what was bonded at the close) and still refuses a
    check it owed: a fault. Before, `release` and `reannounce` were "cannot check" (one live span, not covering the
    hop) and `add_span` too (two spans)."""
    s = setup
    dodger = s.nodes[1]

    def change() -> None:
        s.chain.mine(2)  # past blockhash(closeBlock + 2): the draw is public, the node knows it is drawn
        reg = s.registry_for(dodger)
        old = _assignment(s, dodger)
        if move != "add_span":
            reg.release_shard(old)
        if move != "release":
            reg.announce_shard(s.model_id, OTHER)

    answer, outcome = _run(s, blocks, dodger, after_close=change)
    assert answer.guilty is None and "HTTP 401" in answer.note, answer
    assert answer.fault and "cannot check" not in answer.note, answer
    assert outcome.slashed, outcome
