"""After-the-fact checks end to end on a real anvil registry: five nodes staked on layers 0:2 of the tiny Llama,
each a real worker server (in process, on its own port) with its own key; the accused serves a real job through
its HTTP API, the job is settled, the registry draws the verifiers, they judge the package on POST /v1/verify,
and the coordinator's `DisputeRunner` slashes on a guilty majority of their stake.

- a worker adding noise to its outputs (the --perturb-outputs cheat) is slashed; its stake goes to the client;
- an honest bf16 worker checked by fp32 verifiers is never found guilty;
- 2 colluding identities of 5 can neither frame an honest node nor shield their own cheat;
- the check is two-staged: the first MIN_VERIFIERS (2) drawn judge; unanimous innocent closes it (an honest hop
  costs exactly 2 verifier passes), anything else asks the referees (the rest of the draw: here all 4 others).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from aiohttp import web
from eth_account.signers.local import LocalAccount
from eth_utils import keccak

from coordinator.dispute_answers import DisputeOutcome
from coordinator.disputes import DisputeRunner, hop_step_work
from shardnet.chain.commitments import SignedCommitment, sign_commitment, sign_verdict
from shardnet.chain.devnet import free_port
from shardnet.chain.registry import JobRecord, Registry, Settlement
from shardnet.model import load_block
from shardnet.peer.client import WorkerClient
from shardnet.span import LayerSpan
from shardnet.store.manifest import Manifest
from shardnet.verify.package import StepWork, VerificationPackage
from shardnet.wire.eip712 import Domain
from shardnet.wire.tickets import sign_ticket
from tests.coordinator.harness import serve_on_kernel_port
from tests.fixtures_chain import TEST_PARAMS, DevChain
from worker.limits import verify_positions
from worker.server import BlockInfo, ServerLimits, WorkerServer

SPAN = LayerSpan(0, 2)
PRICE = 1_000
MAX_TOKENS = 8
MIN_STAKE = TEST_PARAMS.min_stake


@dataclass
class Setup:
    chain: DevChain
    owner: Registry  # sends as the owner, also the jobs' coordinator
    coordinator: LocalAccount
    domain: Domain
    model_id: int
    nodes: list[LocalAccount]  # 5 nodes staked on SPAN
    client: LocalAccount
    ports: dict[str, int]
    registry_for: Callable[[LocalAccount | None], Registry]


@pytest.fixture(scope="module")
def blocks(tiny_llama_store: tuple[Path, str, Manifest]) -> dict[torch.dtype, Any]:
    store, _cid, manifest = tiny_llama_store
    return {d: load_block(store, manifest.to_json(), SPAN, d) for d in (torch.float32, torch.bfloat16)}


@pytest.fixture
def setup(
    anvil: DevChain,
    accounts: list[LocalAccount],
    registry_for: Callable[[LocalAccount | None], Registry],
    tiny_llama_store: tuple[Path, str, Manifest],
) -> Iterator[Setup]:
    owner = registry_for(accounts[0])
    owner.set_coordinator(accounts[0].address, "http://127.0.0.1:9", True)
    _store, cid, _manifest = tiny_llama_store
    model_id = int(owner.register_model("tiny", cid, 4, PRICE).event("ModelRegistered").args["modelId"])
    nodes = accounts[1:6]
    ports = {}
    for node in nodes:
        ports[node.address] = free_port()
        reg = registry_for(node)
        reg.register_node(f"http://127.0.0.1:{ports[node.address]}", MIN_STAKE)
        reg.announce_shard(model_id, SPAN)
    yield Setup(anvil, owner, accounts[0], owner.domain(), model_id, nodes, accounts[9], ports, registry_for)


def _server(
    s: Setup,
    node: LocalAccount,
    block: Any,
    perturb: float = 0.0,
    span: LayerSpan = SPAN,
    limits: ServerLimits | None = None,
) -> WorkerServer:
    info = BlockInfo(
        span=span,
        num_layers=4,
        is_first=span.is_first(),
        is_last=span.is_last(4),
        hidden_size=block.hidden_size,
        vocab_size=block.vocab_size,
        kv_bytes_per_token=1,
    )
    views = s.registry_for(None)

    def commit(job_id: int, span: LayerSpan, positions: int, steps: int, root: bytes) -> SignedCommitment:
        return sign_commitment(
            node, s.domain, job_id=job_id, span=span, positions=positions, steps=steps, root=root
        )

    def verdict(job_id: int, accused: str, root: bytes, index: int, leaf: bytes) -> Any:
        return sign_verdict(
            node, s.domain, job_id=job_id, accused=accused, root=root, leaf_index=index, leaf=leaf
        )

    return WorkerServer(
        address=node.address,
        model_name="tiny",
        model_id=s.model_id,
        block=block,
        info=info,
        is_coordinator=views.is_coordinator,
        job_coordinator=lambda job_id: views.job_record(job_id).coordinator,
        chain_id=s.domain.chain_id,
        registry_address=s.domain.registry,
        signer=commit,
        verdict_signer=verdict,
        perturb_outputs=perturb,
        limits=limits,
    )


def _colluder(s: Setup, node: LocalAccount, guilty: bool) -> web.Application:
    """A sybil's /v1/verify: always guilty (framing: a verdict on leaf 1) or always innocent (shielding)."""

    async def handle(request: web.Request) -> web.Response:
        data = await request.json()
        package = VerificationPackage.from_json(data["package"], max_steps=1000)
        c = package.commitment
        if not guilty:
            return web.json_response({"guilty": False, "reason": "looks fine to me"})
        leaf = package.leaves()[1]
        sig = sign_verdict(
            node, s.domain, job_id=c.job_id, accused=c.node, root=c.root, leaf_index=1, leaf=leaf
        )
        return web.json_response(
            {"guilty": True, "leaf_index": 1, "leaf": "0x" + leaf.hex(), "signature": sig.hex()}
        )

    app = web.Application(client_max_size=64 << 20)
    app.add_routes([web.post("/v1/verify", handle)])
    return app


def _poisoner(s: Setup, node: LocalAccount) -> web.Application:
    """A sybil's /v1/verify that says guilty with a verdict the registry refuses: signed over a leaf that is not the
    package's leaf at the index it names (a slash carrying it would revert for every verdict with it)."""

    async def handle(request: web.Request) -> web.Response:
        data = await request.json()
        c = VerificationPackage.from_json(data["package"], max_steps=1000).commitment
        leaf = keccak(text="not the leaf it committed")  # on leaf 0: the one honest verifiers name here
        sig = sign_verdict(
            node, s.domain, job_id=c.job_id, accused=c.node, root=c.root, leaf_index=0, leaf=leaf
        )
        return web.json_response(
            {"guilty": True, "leaf_index": 0, "leaf": "0x" + leaf.hex(), "signature": sig.hex()}
        )

    app = web.Application(client_max_size=64 << 20)
    app.add_routes([web.post("/v1/verify", handle)])
    return app


async def _serve_job(s: Setup, accused: LocalAccount, job_id: int) -> tuple[SignedCommitment, list[StepWork]]:
    """Run a prompt and 6 decode steps through the accused's session of the job, as the coordinator relays them."""
    url = f"http://127.0.0.1:{s.ports[accused.address]}"
    ticket = sign_ticket(
        s.coordinator,
        worker=accused.address,
        session_id=uuid.uuid4().hex,
        job_id=job_id,
        span=SPAN,
        max_positions=64,
        expires_at=int(time.time()) + 600,
        chain_id=s.domain.chain_id,
        registry=s.domain.registry,
    )
    work: list[StepWork] = []
    async with WorkerClient(url) as client:
        sid = (await client.open_session(ticket, "fp32"))["session_id"]
        gen = torch.Generator().manual_seed(job_id)
        x, pos = torch.randint(0, 256, (1, 6), generator=gen), 0
        for _ in range(7):
            res = await client.step_full(sid, x, pos)
            work.append(hop_step_work(x, None, res.tensor, res.step_hash))
            pos += int(x.shape[1])
            x = torch.randint(0, 256, (1, 1), generator=gen)
        closed = await client.close_session(sid)
    assert closed.job_commitment is not None
    return closed.job_commitment, work


def _dispute(
    s: Setup,
    blocks: dict[torch.dtype, Any],
    accused: LocalAccount,
    servers: dict[str, Any],
    dtype: str,
    verify_posts: list[str] | None = None,
    outvoted: list[str] | None = None,
    excluded: set[str] | None = None,
    repeat: int = 1,
    after_close: Callable[[], Any] = lambda: None,
) -> tuple[DisputeOutcome, int, JobRecord]:
    """Serve a job on the accused, settle it, mine past the draw delay and run the dispute; returns the outcome.
    `verify_posts` gets the address of every server that received a POST /v1/verify (one recomputation each);
    `after_close` runs once the job is settled."""
    client_reg = s.registry_for(s.client)
    quote = s.owner.quote(s.model_id, MAX_TOKENS)
    job_id = int(
        client_reg.submit_job(s.model_id, keccak(text="prompt"), MAX_TOKENS, s.coordinator.address, quote)
        .event("JobSubmitted")
        .args["jobId"]
    )

    async def go() -> DisputeOutcome:
        runners = []
        for address, app in servers.items():
            if verify_posts is not None and not app.frozen:
                app.middlewares.append(_counter(address, verify_posts))
            runner = web.AppRunner(app)
            await runner.setup()
            s.ports[address] = await serve_on_kernel_port(runner)  # the URLs below read s.ports
            runners.append(runner)
        try:
            signed, work = await _serve_job(s, accused, job_id)
            record = s.owner.job_record(job_id)
            close = s.owner.settle_jobs(
                [Settlement(job_id, record, keccak(text="out"), [signed])]
            ).block_number
            after_close()
            s.chain.mine(3)
            runner = DisputeRunner(
                s.owner,
                s.coordinator,
                lambda a: f"http://127.0.0.1:{s.ports[a]}",
                on_fault=lambda node, why: faults.append(node),
                on_outvoted=lambda node, why: (outvoted if outvoted is not None else []).append(node),
                excluded=lambda a: a in (excluded or set()),
                verify_timeout_s=60,
            )
            for _ in range(repeat - 1):  # the same hop judged again: as a second hop of one node in the job
                await runner.check_hop(job_id, record, close, signed, work, dtype)
            return await runner.check_hop(job_id, record, close, signed, work, dtype)
        finally:
            for runner in runners:
                await runner.cleanup()

    faults: list[str] = []
    outcome = asyncio.run(go())
    assert sorted(faults) == sorted(a.verifier for a in outcome.answers if a.fault)
    return outcome, job_id, s.owner.job_record(job_id)


def _counter(address: str, posts: list[str]) -> Any:
    @web.middleware
    async def count(request: web.Request, handler: Any) -> web.StreamResponse:
        if request.method == "POST" and request.path == "/v1/verify":
            posts.append(address)
        return await handler(request)

    return count


def _apps(s: Setup, blocks: dict[torch.dtype, Any], honest: list[LocalAccount]) -> dict[str, Any]:
    return {n.address: _server(s, n, blocks[torch.float32]).app() for n in honest}


def test_a_cheating_worker_is_slashed_and_its_stake_goes_to_the_client(
    setup: Setup, blocks: dict[torch.dtype, Any]
) -> None:
    s = setup
    accused, others = s.nodes[0], s.nodes[1:]
    servers = {accused.address: _server(s, accused, blocks[torch.float32], perturb=0.05).app()}
    servers |= _apps(s, blocks, others)
    outcome, job_id, _ = _dispute(s, blocks, accused, servers, "float32")
    assert outcome.slashed, outcome
    assert sorted(a.guilty for a in outcome.answers) == [True] * 4
    assert outcome.escalated and outcome.drawn == 4  # the first two said guilty: the referees were asked
    assert s.owner.get_node(accused.address).jailed and s.owner.is_slashed(job_id, accused.address)
    taken = MIN_STAKE * s.owner.slash_bps() // 10_000
    [event] = s.owner.get_logs(0, s.owner.block_number(), ["NodeSlashed"])
    assert (event.args["node"], event.args["client"], event.args["amount"]) == (
        accused.address,
        s.client.address,
        taken,
    )
    assert event.tx_hash == outcome.tx_hash


def test_an_honest_bf16_worker_is_never_slashed(setup: Setup, blocks: dict[torch.dtype, Any]) -> None:
    s = setup
    accused, others = s.nodes[0], s.nodes[1:]
    servers = {accused.address: _server(s, accused, blocks[torch.bfloat16]).app()} | _apps(s, blocks, others)
    posts: list[str] = []
    outcome, job_id, _ = _dispute(s, blocks, accused, servers, "bfloat16", posts)
    assert not outcome.slashed and [a.guilty for a in outcome.answers] == [False] * 2, outcome
    assert not s.owner.get_node(accused.address).jailed
    # an honest hop costs exactly 2 verifier passes: the first two of the draw, nobody else was asked
    assert outcome.drawn == 4 and not outcome.escalated and outcome.passes == 2
    assert sorted(posts) == sorted(a.verifier for a in outcome.answers) and len(set(posts)) == 2


def test_two_colluders_of_five_cannot_frame_an_honest_node(
    setup: Setup, blocks: dict[torch.dtype, Any]
) -> None:
    """The colluders say guilty whenever drawn. A colluder in the first stage escalates the check to all 4 others,
    where the two colluders hold exactly half of the drawn stake: not more than half, no slash. Jobs are run
    until one draws a colluder first (5 in 6 do), so the escalated path is the one tested."""
    s = setup
    accused, colluders, honest = s.nodes[0], s.nodes[1:3], s.nodes[3:]
    colluding = {c.address for c in colluders}
    for _attempt in range(4):
        outvoted: list[str] = []
        servers = {accused.address: _server(s, accused, blocks[torch.float32]).app()} | _apps(
            s, blocks, honest
        )
        servers |= {c.address: _colluder(s, c, guilty=True) for c in colluders}
        posts: list[str] = []
        outcome, job_id, _ = _dispute(s, blocks, accused, servers, "float32", posts, outvoted)
        assert not outcome.slashed and not s.owner.get_node(accused.address).jailed, outcome
        first = {a.verifier for a in outcome.answers[:2]}
        if not first & colluding:  # two honest verifiers first: innocent, closed at 2 passes
            assert [a.guilty for a in outcome.answers] == [False, False] and len(posts) == 2
            continue
        assert outcome.escalated and len(posts) == 4
        assert sorted(bool(a.guilty) for a in outcome.answers) == [False, False, True, True]
        assert {a.verifier for a in outcome.answers if a.guilty} == colluding == set(outvoted)
        break
    else:
        pytest.fail("4 jobs in a row drew two honest verifiers first (chance 1 in 1296)")


def test_a_cheat_and_its_sybil_cannot_shield_the_cheat(setup: Setup, blocks: dict[torch.dtype, Any]) -> None:
    s = setup
    accused, sybil, honest = s.nodes[0], s.nodes[1], s.nodes[2:]
    servers = {accused.address: _server(s, accused, blocks[torch.float32], perturb=0.05).app()}
    servers |= _apps(s, blocks, honest) | {sybil.address: _colluder(s, sybil, guilty=False)}
    outvoted: list[str] = []
    outcome, job_id, _ = _dispute(s, blocks, accused, servers, "float32", outvoted=outvoted)
    assert outcome.slashed and s.owner.get_node(accused.address).jailed
    assert sorted(bool(a.guilty) for a in outcome.answers) == [False, True, True, True]
    assert outcome.escalated  # an honest verifier is always among the first two: its guilty verdict escalates
    assert outvoted == [sybil.address]  # reported: the coordinator counts it as a fault


def test_the_share_of_jobs_checked_is_drawn_from_the_close_randomness() -> None:
    from coordinator.hop_facts import job_drawn

    randomness = keccak(text="blockhash(closeBlock + 2)")
    assert all(job_drawn(randomness, j, 1.0) for j in range(50))
    assert not any(job_drawn(randomness, j, 0.0) for j in range(50))
    drawn = sum(job_drawn(randomness, j, 0.25) for j in range(2000))
    assert 420 < drawn < 580  # 500 expected; binomial sd ~19
    other = keccak(text="another block")
    assert [job_drawn(other, j, 0.25) for j in range(64)] != [
        job_drawn(randomness, j, 0.25) for j in range(64)
    ]


def test_a_verifier_that_does_not_answer_is_a_fault_and_cannot_shield(
    setup: Setup, blocks: dict[torch.dtype, Any]
) -> None:
    s = setup
    accused, silent, honest = s.nodes[0], s.nodes[1], s.nodes[2:]
    servers = {accused.address: _server(s, accused, blocks[torch.float32], perturb=0.05).app()}
    servers |= _apps(s, blocks, honest)  # `silent` serves nothing on its registered endpoint
    outcome, job_id, _ = _dispute(s, blocks, accused, servers, "float32")
    [fault] = [a for a in outcome.answers if a.fault]
    assert fault.verifier == silent.address and fault.guilty is None
    assert outcome.slashed and s.owner.get_node(accused.address).jailed  # 3 of 4 drawn stake: a majority


def test_a_sybil_verdict_on_a_leaf_not_committed_cannot_make_the_slash_revert(
    setup: Setup, blocks: dict[torch.dtype, Any]
) -> None:
    """One sybil of 4 drawn (all are: the cheat escalates) says guilty over a leaf the accused never committed
    to: counted, its signature would make the registry's slash revert and the cheat go unpunished. It is a
    fault instead, and the honest verdicts (3 of 4 drawn stake) slash."""
    s = setup
    accused, sybil, honest = s.nodes[0], s.nodes[1], s.nodes[2:]
    servers = {accused.address: _server(s, accused, blocks[torch.float32], perturb=0.05).app()}
    servers |= _apps(s, blocks, honest) | {sybil.address: _poisoner(s, sybil)}
    outcome, job_id, _ = _dispute(s, blocks, accused, servers, "float32")
    [poisoned] = [a for a in outcome.answers if a.verifier == sybil.address]
    assert poisoned.fault and poisoned.guilty is None and "leaf" in poisoned.note, poisoned
    assert outcome.slashed and s.owner.get_node(accused.address).jailed, outcome


def test_guilty_verdicts_kept_from_a_slash_by_refusals_are_not_outvoted(
    setup: Setup, blocks: dict[torch.dtype, Any]
) -> None:
    """A cheat's 2 sybils of the 4 others: one says innocent, one refuses (503). The 2 honest guilty verdicts hold
    half of the drawn stake: no slash (the documented shield at s = 1/2). They were not outvoted (1 innocent
    against 2 guilty), so they are no faults: a shield must not also push honest verifiers out of routing. The
    refusal is a fault."""
    s = setup
    accused, (liar, refuser), honest = s.nodes[0], s.nodes[1:3], s.nodes[3:]
    servers = {accused.address: _server(s, accused, blocks[torch.float32], perturb=0.05).app()}
    servers |= _apps(s, blocks, honest) | {liar.address: _colluder(s, liar, guilty=False)}
    servers[refuser.address] = web.Application()
    servers[refuser.address].add_routes([web.post("/v1/verify", lambda _r: _refuse())])
    outvoted: list[str] = []
    outcome, job_id, _ = _dispute(s, blocks, accused, servers, "float32", outvoted=outvoted)
    assert not outcome.slashed and outcome.escalated, outcome
    assert sorted(str(a.guilty) for a in outcome.answers) == ["False", "None", "True", "True"]
    assert [a.verifier for a in outcome.answers if a.fault] == [refuser.address]
    assert outvoted == [], outvoted


async def _refuse() -> web.Response:
    return web.json_response({"error": "busy"}, status=503)


def test_a_verifier_answer_is_read_no_further_than_its_limit(
    setup: Setup, blocks: dict[torch.dtype, Any]
) -> None:
    """A sybil answering 8 MiB (or without end) costs the coordinator 64 KiB of reading: a fault, and the
    honest verdicts slash."""
    s = setup
    accused, flooder, honest = s.nodes[0], s.nodes[1], s.nodes[2:]

    async def flood(request: web.Request) -> web.StreamResponse:
        await request.read()
        resp = web.StreamResponse()
        await resp.prepare(request)
        for _ in range(128):
            await resp.write(b" " * 65536)
        return resp

    servers = {accused.address: _server(s, accused, blocks[torch.float32], perturb=0.05).app()}
    servers |= _apps(s, blocks, honest)
    servers[flooder.address] = web.Application()
    servers[flooder.address].add_routes([web.post("/v1/verify", flood)])
    outcome, job_id, _ = _dispute(s, blocks, accused, servers, "float32")
    [flooded] = [a for a in outcome.answers if a.verifier == flooder.address]
    assert flooded.fault and "larger than the 65536 bytes" in flooded.note, flooded
    assert outcome.slashed, outcome


def test_an_answer_without_a_verdict_is_a_fault_not_an_innocent_verdict(
    setup: Setup, blocks: dict[torch.dtype, Any]
) -> None:
    s = setup
    accused, mute, honest = s.nodes[0], s.nodes[1], s.nodes[2:]

    async def no_verdict(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(text="ok")

    servers = {accused.address: _server(s, accused, blocks[torch.float32], perturb=0.05).app()}
    servers |= _apps(s, blocks, honest)
    servers[mute.address] = web.Application()
    servers[mute.address].add_routes([web.post("/v1/verify", no_verdict)])
    outcome, job_id, _ = _dispute(s, blocks, accused, servers, "float32")
    [muted] = [a for a in outcome.answers if a.verifier == mute.address]
    assert muted.fault and muted.guilty is None and "without a verdict" in muted.note, muted
    assert outcome.slashed, outcome


def test_a_verifier_this_coordinator_excluded_is_never_in_the_first_stage(
    setup: Setup, blocks: dict[torch.dtype, Any]
) -> None:
    """A framer out of routing (MAX_FAULTS) is still drawn by the registry; were it asked first, each hop it is drawn
    first for would cost every referee a pass. It is skipped in the first stage: the next two of the draw judge,
    an honest hop costs 2 passes, and the framer is not asked (8 jobs: it is drawn first in half of them; in
    none of 8 with a chance of 1 in 256)."""
    s = setup
    accused, framer, honest = s.nodes[0], s.nodes[1], s.nodes[2:]
    for _job in range(8):
        servers = {accused.address: _server(s, accused, blocks[torch.float32]).app()}
        servers |= _apps(s, blocks, honest) | {framer.address: _colluder(s, framer, guilty=True)}
        posts: list[str] = []
        outcome, job_id, _ = _dispute(
            s, blocks, accused, servers, "float32", posts, excluded={framer.address}
        )
        assert not outcome.slashed and not outcome.escalated and outcome.passes == 2, outcome
        assert framer.address not in posts and len(posts) == 2, posts


def test_a_node_guilty_on_two_hops_of_one_job_is_slashed_once_and_the_check_goes_on(
    setup: Setup, blocks: dict[torch.dtype, Any]
) -> None:
    """A node may hold two spans of one route: its second guilty hop's slash would revert (AlreadySlashed), which
    failed the whole job's check (no correction for the client). The second hop is found slashed already."""
    s = setup
    accused, others = s.nodes[0], s.nodes[1:]
    servers = {accused.address: _server(s, accused, blocks[torch.float32], perturb=0.05).app()}
    servers |= _apps(s, blocks, others)
    outcome, job_id, _ = _dispute(s, blocks, accused, servers, "float32", repeat=2)
    assert outcome.slashed and outcome.tx_hash is None and "already slashed" in outcome.note, outcome
    assert len(s.owner.get_logs(0, s.owner.block_number(), ["NodeSlashed"])) == 1


@pytest.mark.parametrize("status", [401, 422])
def test_a_verifier_refusing_a_valid_check_with_401_or_422_is_a_fault(
    setup: Setup, blocks: dict[torch.dtype, Any], status: int
) -> None:
    """The coordinator signed the ticket for exactly this verifier, span and job, and the package is what the
    accused signed (`DisputeRunner.request_error`): a drawn verifier that answers 401 or 422 refuses to work. It
    was free ("cannot check this hop"): now it is a fault like any refusal, and the honest verdicts (3 of 4 drawn
    stake) slash."""
    s = setup
    accused, refuser, honest = s.nodes[0], s.nodes[1], s.nodes[2:]

    async def refuse(request: web.Request) -> web.Response:
        await request.read()
        return web.json_response({"error": "not today"}, status=status)

    servers = {accused.address: _server(s, accused, blocks[torch.float32], perturb=0.05).app()}
    servers |= _apps(s, blocks, honest)
    servers[refuser.address] = web.Application()
    servers[refuser.address].add_routes([web.post("/v1/verify", refuse)])
    outcome, job_id, _ = _dispute(s, blocks, accused, servers, "float32")
    [refused] = [a for a in outcome.answers if a.verifier == refuser.address]
    assert refused.fault and refused.guilty is None and f"HTTP {status}" in refused.note, refused
    assert outcome.slashed, outcome


WIDE = LayerSpan(0, 4)  # covers SPAN: the registry draws a node bonded on it for SPAN's hops


@pytest.fixture(scope="module")
def wide_block(tiny_llama_store: tuple[Path, str, Manifest]) -> Any:
    store, _cid, manifest = tiny_llama_store
    return load_block(store, manifest.to_json(), WIDE, torch.float32)


def _widen(s: Setup, node: LocalAccount) -> None:
    """Re-bond `node` on WIDE (0:4) instead of SPAN, before the job: it is drawn for the job's 0:2 hop."""
    reg = s.registry_for(node)
    [old] = [
        a for a in s.owner.live_assignments(s.model_id) if s.owner.get_assignment(a).node == node.address
    ]
    reg.release_shard(old)
    reg.announce_shard(s.model_id, WIDE)


@pytest.mark.parametrize("cheat", [True, False])
def test_a_verifier_with_a_wider_span_judges_the_hop(
    setup: Setup, blocks: dict[torch.dtype, Any], wide_block: Any, cheat: bool
) -> None:
    """A node bonded on layers 0:4 is drawn for a hop of 0:2 (the registry draws every node whose span covers the
    hop's). Its worker holds those layers: it runs just them (`Block.view`) and judges the hop, guilty for a
    perturbed accused, innocent for an honest one. It was "cannot check" (a 401: its worker checked only packages
    of exactly its span), and its stake weighed as innocent in every slash. Two of the three others are kept out
    of the first stage, so that the wide verifier is in it."""
    s = setup
    accused, wide, honest = s.nodes[0], s.nodes[1], s.nodes[2:]
    _widen(s, wide)
    servers = {
        accused.address: _server(s, accused, blocks[torch.float32], perturb=0.05 if cheat else 0.0).app()
    }
    servers |= _apps(s, blocks, honest)
    servers[wide.address] = _server(s, wide, wide_block, span=WIDE).app()
    first = {honest[0].address, honest[1].address}
    outcome, _job_id, _ = _dispute(s, blocks, accused, servers, "float32", excluded=first)
    [answer] = [a for a in outcome.answers if a.verifier == wide.address]
    assert answer.guilty is cheat and not answer.fault, answer
    assert wide.address in {a.verifier for a in outcome.answers[:2]}  # it was in the first stage
    if cheat:
        assert outcome.slashed and outcome.escalated and [a.guilty for a in outcome.answers] == [True] * 4
        assert s.owner.get_node(accused.address).jailed, outcome
    else:
        assert not outcome.slashed and not outcome.escalated, outcome
        assert [a.guilty for a in outcome.answers] == [False] * 2, outcome
        assert not s.owner.get_node(accused.address).jailed, outcome


@pytest.mark.parametrize("status", [401, 422])
def test_a_verifier_with_a_wider_span_refusing_a_valid_check_is_a_fault(
    setup: Setup, blocks: dict[torch.dtype, Any], status: int
) -> None:
    """A node bonded on 0:4, drawn for a hop of 0:2, can check it: a 401 or 422 from it to a valid check is a
    refusal, a fault like any, not "cannot check" (tests/coordinator/test_disputes_dodge.py: nor is one from a node
    that holds or moved to other spans)."""
    s = setup
    accused, refuser, honest = s.nodes[0], s.nodes[1], s.nodes[2:]
    _widen(s, refuser)

    async def refuse(request: web.Request) -> web.Response:
        await request.read()
        return web.json_response(
            {"error": "the ticket names layers 0:2, this worker serves 0:4"}, status=status
        )

    servers = {accused.address: _server(s, accused, blocks[torch.float32], perturb=0.05).app()}
    servers |= _apps(s, blocks, honest)
    servers[refuser.address] = web.Application()
    servers[refuser.address].add_routes([web.post("/v1/verify", refuse)])
    outcome, _job_id, _ = _dispute(s, blocks, accused, servers, "float32")
    [refused] = [a for a in outcome.answers if a.verifier == refuser.address]
    assert refused.fault and refused.guilty is None and f"HTTP {status}" in refused.note, refused
    assert "cannot check" not in refused.note, refused
    assert outcome.slashed, outcome


def test_a_check_this_coordinator_cannot_validly_ask_is_sent_to_nobody(
    setup: Setup, blocks: dict[torch.dtype, Any]
) -> None:
    """The coordinator's approval was revoked after the job closed: every verifier would rightly answer 401 (its
    ticket's signer is no approved coordinator). The coordinator checks its own request first: the error is its
    own, logged, nobody is asked and nobody faulted."""
    s = setup
    accused, others = s.nodes[0], s.nodes[1:]
    servers = {accused.address: _server(s, accused, blocks[torch.float32], perturb=0.05).app()}
    servers |= _apps(s, blocks, others)
    posts: list[str] = []

    def revoke() -> None:
        s.owner.set_coordinator(s.coordinator.address, "http://127.0.0.1:9", False)

    outcome, job_id, _ = _dispute(s, blocks, accused, servers, "float32", posts, after_close=revoke)
    assert outcome.answers == [] and not outcome.slashed and posts == [], (outcome, posts)
    assert outcome.note.startswith("not asked") and "not approved" in outcome.note, outcome


@pytest.mark.parametrize("bound_by_registry", [True, False])
def test_a_verifier_with_a_small_max_length_checks_every_hop_the_registry_allows(
    setup: Setup, blocks: dict[torch.dtype, Any], bound_by_registry: bool
) -> None:
    """A worker whose sessions hold at most 4 positions (--max-length 4) is still drawn for a hop of 7 steps and 12
    positions: its checks are bounded by what the registry lets a job hold (as `worker run` sets them), not by its
    sessions' limit, so it judges the hop and is never in the position of refusing (a 400 is a fault: otherwise a
    lazy verifier could claim small limits whenever it is drawn). Without that bound it refuses with a 400 and is
    faulted; the 3 others slash either way."""
    s = setup
    accused, small, honest = s.nodes[0], s.nodes[1], s.nodes[2:]
    views = s.registry_for(None)
    bound = verify_positions(2048, views.max_job_tokens(), views.max_prompt_tokens())
    limits = ServerLimits(max_length=4, max_verify_positions=bound if bound_by_registry else None)
    servers = {accused.address: _server(s, accused, blocks[torch.float32], perturb=0.05).app()}
    servers |= _apps(s, blocks, honest)
    servers[small.address] = _server(s, small, blocks[torch.float32], limits=limits).app()
    outcome, _job_id, _ = _dispute(s, blocks, accused, servers, "float32")
    [answer] = [a for a in outcome.answers if a.verifier == small.address]
    if bound_by_registry:
        assert answer.guilty is True and not answer.fault, answer
    else:
        assert answer.fault and answer.guilty is None and "HTTP 400" in answer.note, answer
    assert outcome.slashed and s.owner.get_node(accused.address).jailed, outcome


def test_a_workers_checks_hold_the_registrys_largest_job_within_the_models_context() -> None:
    assert verify_positions(8192, 1024, 512) == 1536
    assert verify_positions(1024, 4096, 512) == 1024  # no job outgrows the model's context
    assert ServerLimits(max_length=4, max_verify_positions=1536).verify_positions == 1536
    assert ServerLimits(max_length=2048, max_verify_positions=1536).verify_positions == 2048
    assert ServerLimits(max_length=4).verify_positions == 4
