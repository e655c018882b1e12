"""Verification on the worker: the leaf each step commits to, the steps kept for disputes, and POST /v1/verify.

Every step's Merkle leaf binds what the hop received, what it sent and the fingerprint of what it sent
(`shardnet.verify.package`), computed from the decoded frame sent, so anyone holding those bytes recomputes
it bit for bit. A closed job's input hashes and fingerprints are kept for the dispute window (bounded, the
oldest evicted first).

POST /v1/verify checks a hop of a closed job that another node served, after the fact: the body is
`{"ticket": <the job's coordinator's ticket for this worker, the hop's span and the job>, "package": {...}}`. The
hop's span lies within the worker's (the registry draws every node whose span covers the hop's): the worker runs
just the hop's layers (`Block.view`), judging the package in one prefill-style pass on its compute thread, and answers
`{"guilty": bool, "leaf_index", "leaf", "signature" (an EIP-712 Verdict: on the wrong leaf when guilty, on leaf
index 2**32 - 1 with leaf 0 when innocent; the registry pays either), "reason", "tokens"
(last hop: the shown tokens' check, `shardnet.verify.tokens`), ...}`; a
package that is not what its accused signed is refused (422) without a verdict. There is no session: a
check of committed work looks like nothing else a worker does, and cannot be told apart by its job.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from shardnet.chain.commitments import INNOCENT_LEAF, INNOCENT_LEAF_INDEX
from shardnet.peer.errors import BadRequest, TicketRejected, WorkerAPIError
from shardnet.span import LayerSpan
from shardnet.verify.fingerprint import io_hash, leaf, make_fingerprint, make_fingerprints
from shardnet.verify.package import PackageError, VerificationPackage, judge
from shardnet.wire.commitment import step_hash
from shardnet.wire.eip712 import CompactSignature, Domain
from shardnet.wire.frames import decode_frame
from shardnet.wire.json_limits import BodyRejected, loads_limited
from shardnet.wire.tickets import TicketError, verify_ticket
from worker.http_errors import read_body
from worker.inputs import check_job_id

if TYPE_CHECKING:
    from worker.server import WorkerServer

#: Signs a verdict: (job_id, accused, root, leaf_index, leaf) -> EIP-2098 signature (innocent: INNOCENT_LEAF_INDEX).
VerdictSigner = Callable[[int, str, bytes, int, bytes], CompactSignature]

KEPT_JOBS = 1024  # jobs whose committed steps are kept for disputes
KEPT_STEPS = 1 << 18  # and at most this many steps in all (~100 bytes each: ~25 MiB)
DISPUTE_WINDOW_S = 24 * 3600.0


def commit_step(input_hash: bytes, frame: bytes) -> tuple[bytes, bytes, bytes]:
    """(step hash of the frame sent, the step's Merkle leaf, the fingerprint of what was sent)."""
    digest = step_hash(frame)
    fingerprint = make_fingerprint(decode_frame(frame))
    return digest, leaf(io_hash(input_hash, digest), fingerprint), fingerprint


def commit_steps(steps: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes, bytes]]:
    """`commit_step` of each (input hash, frame sent), bit for bit, the fingerprints taken in one pass."""
    digests = [step_hash(frame) for _, frame in steps]
    fingerprints = make_fingerprints([decode_frame(frame) for _, frame in steps])
    return [
        (digest, leaf(io_hash(input_hash, digest), fingerprint), fingerprint)
        for (input_hash, _), digest, fingerprint in zip(steps, digests, fingerprints, strict=True)
    ]


class CommittedSteps:
    """Per job, the input hashes and fingerprints this worker committed to, for `window_s` (at most `max_jobs`
    jobs and `max_steps` steps in all; the oldest job goes first)."""

    def __init__(
        self, max_jobs: int = KEPT_JOBS, window_s: float = DISPUTE_WINDOW_S, max_steps: int = KEPT_STEPS
    ) -> None:
        self.max_jobs = max_jobs
        self.window_s = window_s
        self.max_steps = max_steps
        self._steps = 0
        self._jobs: OrderedDict[int, tuple[float, list[tuple[bytes, bytes]]]] = OrderedDict()

    def add(self, job_id: int, steps: list[tuple[bytes, bytes]], now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        _, kept = self._jobs.pop(job_id, (now, []))
        self._jobs[job_id] = (now, kept + steps)
        self._steps += len(steps)
        while self._jobs and (
            len(self._jobs) > self.max_jobs
            or self._steps > self.max_steps
            or now - next(iter(self._jobs.values()))[0] > self.window_s
        ):
            self._steps -= len(self._jobs.popitem(last=False)[1][1])

    def get(self, job_id: int) -> list[tuple[bytes, bytes]] | None:
        """(input hash, fingerprint) per committed step of the job, or None when never held or evicted."""
        entry = self._jobs.get(job_id)
        return None if entry is None else list(entry[1])

    def __len__(self) -> int:
        return len(self._jobs)


class VerifyEndpoint:
    """POST /v1/verify of one worker server (see the module docstring)."""

    def __init__(self, server: WorkerServer, signer: VerdictSigner | None) -> None:
        self.server = server
        self.signer = signer
        limits = server.limits
        width = max(server.info.hidden_size, 1)
        # every position's input as fp32 in base64, plus per-step overhead: a whole job of the most positions a
        # check may hold (what the registry lets a job hold: ServerLimits.verify_positions)
        self.max_bytes = limits.verify_positions * (width * 6 + 256) + 64 * 1024

    def routes(self) -> list[web.RouteDef]:
        return [web.post("/v1/verify", self.handle)]

    async def handle(self, request: web.Request) -> web.Response:
        if self.signer is None:
            raise WorkerAPIError("this worker has no key to sign verdicts: it cannot verify", status=503)
        body = await read_body(request, self.max_bytes, self.server.limits.body_timeout_s)
        try:
            data = loads_limited(body, max_bytes=self.max_bytes, max_depth=8)
            if not isinstance(data, dict) or not isinstance(data.get("ticket"), dict):
                raise BadRequest('send {"ticket": {...}, "package": {...}}')
            package = VerificationPackage.from_json(
                data.get("package"), max_steps=self.server.limits.verify_positions
            )
        except BodyRejected as exc:
            raise WorkerAPIError(str(exc), status=exc.status) from exc
        except PackageError as exc:
            raise BadRequest(str(exc)) from exc
        await self._check_ticket(data["ticket"], package)
        domain = Domain(self.server.chain_id, self.server.registry_address)
        loop = asyncio.get_running_loop()
        try:
            found = await loop.run_in_executor(
                self.server._compute, judge, package, domain, self.server.block
            )
        except (PackageError, ValueError) as exc:
            raise WorkerAPIError(f"cannot judge this package: {exc}", status=422) from exc
        c = package.commitment
        answer: dict[str, Any] = {
            "job_id": c.job_id,
            "accused": c.node,
            "root": "0x" + c.root.hex(),
            "guilty": found.guilty,
            "reason": found.reason,
            "positions": found.verdict.positions_recomputed,
            "max_distance": min(found.verdict.max_distance, 1e300),
        }
        if (
            found.tokens is not None
        ):  # the last hop's shown tokens: which the logits do not support, and whose
            answer["tokens"] = found.tokens.to_json()
        # guilty: a Verdict on the wrong leaf; innocent: one on INNOCENT_LEAF_INDEX (leaf 0). Both are signed: the
        # coordinator shows either to the registry, which pays each drawn verifier's verdict (payVerifiers)
        leaf_index, leaf_bytes = INNOCENT_LEAF_INDEX, INNOCENT_LEAF
        if found.guilty:
            assert found.leaf_index is not None and found.leaf is not None
            leaf_index, leaf_bytes = found.leaf_index, found.leaf
        signature = self.signer(c.job_id, c.node, c.root, leaf_index, leaf_bytes)
        answer |= {"leaf_index": leaf_index, "leaf": "0x" + leaf_bytes.hex(), "signature": signature.hex()}
        self.server.metrics.tokens_processed.inc(found.verdict.positions_recomputed)
        return web.json_response(answer)

    async def _check_ticket(self, ticket: dict[str, Any], package: VerificationPackage) -> None:
        """The ticket must be this worker's, for the package's job and span (within the worker's), signed by the job's
        coordinator."""
        server = self.server
        raw_job = ticket.get("job_id")
        if isinstance(raw_job, int) and not isinstance(raw_job, bool):
            check_job_id(raw_job)
        try:
            signer = verify_ticket(
                ticket, worker=server.address, chain_id=server.chain_id, registry=server.registry_address
            )
        except TicketError as exc:
            raise TicketRejected(str(exc)) from exc
        if int(ticket["job_id"]) != package.commitment.job_id:
            raise TicketRejected(
                f"the ticket is for job {ticket['job_id']}, the package for job {package.commitment.job_id}"
            )
        span = LayerSpan(*ticket["span"])
        if not server.info.span.covers(span):  # a hop within this worker's span: it holds those layers
            raise TicketRejected(
                f"the ticket names layers {span}, this worker serves {server.info.span}, which does not hold them"
            )
        if span != package.commitment.span:
            raise TicketRejected(
                f"the ticket names layers {span}, the package is for layers {package.commitment.span}"
            )
        loop = asyncio.get_running_loop()
        if not await loop.run_in_executor(None, server._is_coordinator, signer):
            raise TicketRejected(f"the ticket is signed by {signer}, not an approved coordinator")
        if server._job_coordinator is not None:
            named = await loop.run_in_executor(None, server._job_coordinator, package.commitment.job_id)
            if named is None or named.lower() != signer.lower():
                raise TicketRejected(
                    f"job {package.commitment.job_id} names the coordinator {named}, not {signer}: "
                    "only the job's coordinator asks for its checks"
                )
