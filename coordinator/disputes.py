"""After-the-fact checks of a closed job's hops by verifiers the registry draws, and the slash on a guilty majority.

The coordinator relays every hop's input and output (pull mode), so for each hop it holds, per step, the frame
the hop received, the hash of the frame it sent and the fingerprint of what it sent (`hop_step_work`, computed
here from the received tensor: a worker that commits another fingerprint than that of what it sent does not
rebuild its root and is not settled). When the job is settled (its close block known):

1. wait until blockhash(closeBlock + DRAW_DELAY) exists, then ask the registry whom it draws (`drawVerifiers`:
   up to MAX_VERIFIERS, stake-weighted, without replacement, among the other nodes staked on a span covering
   the hop's, in draw order; unknown when the work was committed);
2. first stage: POST the first MIN_VERIFIERS drawn the hop's `VerificationPackage` with a ticket of this job
   (POST /v1/verify; there is no session, so a check looks like nothing else); each answers guilty (an
   EIP-712 Verdict on one leaf) or innocent. Both innocent: the check is closed (an honest hop costs exactly
   MIN_VERIFIERS recomputations). Any guilty verdict, any refusal or time-out (a fault: recorded and marked
   down; a 401 or 422 to a request the coordinator checked first, `request_error`, is a refusal too: the
   registry drew the verifier for a span covering the hop's that it held at the close, whatever it holds or
   serves now), any disagreement: second stage, the referees (the rest of the draw) judge the same package;
3. when the guilty verdicts on one leaf carry more than half of the stake of ALL the drawn verifiers (what the
   registry's `slash` counts: a refusal weighs as innocent), send `slash` with the accused's own signed
   commitment, the leaf's Merkle proof and those verdicts: its stake goes to the job's client and it is
   excluded from routing. The last hop's package also carries the tokens the client was shown
   (`ShownTokens`): a token its own logits made and the recomputation does not support makes it guilty; one
   its logits did not make flags this coordinator (`DisputeOutcome.tokens_flagged`), and slashes nobody.

What a colluder holding a share s of the drawn-from stake can do (shardnet/verify/draw_odds.py, exact for
equal stakes; docs/verification.md): shield its cheat only when both first-stage verifiers are its own
(probability <= s**2) or it holds at least half of the drawn stake; frame an honest node only when one of
its own is in the first stage and it holds more than half of the drawn stake.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable, Sequence

import aiohttp
import torch
from eth_account.signers.local import LocalAccount

from coordinator.dispute_answers import (
    MIN_VERIFIERS,
    DisputeOutcome,
    VerifierAnswer,
    answer_signer,
    first_stage,
    needs_referees,
    tally,
)
from coordinator.verifier_pay import innocent_signature
from shardnet.chain.commitments import SignedCommitment, verify_commitment
from shardnet.chain.registry import JobRecord, Registry, SlashEvidence
from shardnet.errors import ShardnetError
from shardnet.verify.fingerprint import make_fingerprint
from shardnet.verify.package import PackageError, StepWork, VerificationPackage
from shardnet.verify.tokens import ShownTokens
from shardnet.wire.commitment import merkle_proof, merkle_root
from shardnet.wire.eip712 import Domain
from shardnet.wire.frames import encode_frame, read_header
from shardnet.wire.json_limits import BodyTooLarge, loads_limited, read_answer_limited
from shardnet.wire.tickets import TicketError, sign_ticket, verify_ticket

log = logging.getLogger(__name__)

MAX_VERIFIERS = 16  # ShardRegistry.MAX_VERIFIERS: the draw, first stage and referees
MAX_VERDICT_BYTES = 64 * 1024  # a verifier's answer is read no further
DRAW_DELAY = 2  # ShardRegistry.DRAW_DELAY
LOOSEST_DTYPE = "bfloat16"  # the tolerance used when the accused's dtype cannot be read: never slash drift


def input_frame(x: torch.Tensor, codec: str | None) -> bytes:
    """The frame a hop is sent for input `x` (the same bytes `WorkerClient.step_full` encodes)."""
    return encode_frame(x, codec or ("int64" if not x.dtype.is_floating_point else "fp32"))


def hop_step_work(x: torch.Tensor, codec: str | None, output: torch.Tensor, output_hash: bytes) -> StepWork:
    """One step of a hop as the coordinator relayed it: the frame sent to the hop, the hash of the frame it
    answered and the fingerprint of the decoded answer (`JobHops.relay` computes it off the event loop)."""
    return StepWork(input_frame(x, codec), output_hash, make_fingerprint(output))


class DisputeRunner:
    """Runs the after-the-fact checks of one coordinator's settled jobs (see the module docstring)."""

    def __init__(
        self,
        registry: Registry,
        account: LocalAccount,
        endpoint_of: Callable[[str], str | None],
        *,
        on_fault: Callable[[str, str], None] = lambda _node, _why: None,
        on_slashed: Callable[[str], None] = lambda _node: None,
        on_outvoted: Callable[[str, str], None] = lambda _node, _why: None,
        excluded: Callable[[str], bool] = lambda _node: False,
        verify_timeout_s: float = 120.0,
        draw_wait_s: float = 300.0,
        poll_s: float = 0.5,
    ) -> None:
        self.registry = registry
        self.account = account
        self.endpoint_of = endpoint_of
        self.on_fault = on_fault
        self.on_slashed = on_slashed
        self.on_outvoted = on_outvoted
        self.excluded = excluded
        self.verify_timeout_s = verify_timeout_s
        self.draw_wait_s = draw_wait_s
        self.poll_s = poll_s
        self._domain: Domain | None = None

    @property
    def domain(self) -> Domain:
        if self._domain is None:
            self._domain = self.registry.domain()
        return self._domain

    async def wait_for_draw(self, close_block: int) -> bool:
        """Wait until the draw's randomness (blockhash(closeBlock + DRAW_DELAY)) can be read; False on time-out."""
        deadline = time.monotonic() + self.draw_wait_s
        while await asyncio.to_thread(self.registry.block_number) <= close_block + DRAW_DELAY:
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(self.poll_s)
        return True

    async def check_hop(
        self,
        job_id: int,
        record: JobRecord,
        close_block: int,
        signed: SignedCommitment,
        steps: Sequence[StepWork],
        worker_dtype: str | None = None,
        shown: ShownTokens | None = None,
    ) -> DisputeOutcome:
        """Have the drawn verifiers judge one hop (the last one also on the `shown` tokens); slash on a guilty
        majority of their stake."""
        package = VerificationPackage(signed, list(steps), worker_dtype or LOOSEST_DTYPE, shown)
        leaves = package.leaves()
        if len(leaves) != signed.steps or merkle_root(leaves) != signed.root:
            return DisputeOutcome(signed.node, [], False, note="the relayed steps do not rebuild its root")
        body = package.to_json()
        invalid = await asyncio.to_thread(self.request_error, job_id, record, package, body)
        if invalid:  # a verifier would refuse it (401/422), rightly: nobody is asked, nobody faulted
            log.error(
                "job %d: the hop of %s is not checked: this coordinator's request is not valid: %s",
                job_id,
                signed.node,
                invalid,
            )
            return DisputeOutcome(signed.node, [], False, note=f"not asked: {invalid}"[:300])
        drawn = await asyncio.to_thread(
            self.registry.draw_verifiers, job_id, record, close_block, signed.node, signed.span, signed.root
        )
        if len(drawn) < MIN_VERIFIERS:
            return DisputeOutcome(signed.node, [], False, note=f"{len(drawn)} verifiers drawn, too few")
        first, referees = first_stage(drawn, self.excluded)
        answers = await self._ask_all(first, job_id, signed, body, leaves)
        escalated = bool(referees) and needs_referees(answers)
        if escalated:
            log.info(
                "job %d: hop of %s: first stage %s; asking %d referees",
                job_id,
                signed.node,
                [a.guilty for a in answers],
                len(referees),
            )
            answers += await self._ask_all(referees, job_id, signed, body, leaves)
        index, group = tally(answers, sum(stake for _, stake in drawn))
        asked = {a.verifier for a in answers}
        picks = max(i + 1 for i, (address, _) in enumerate(drawn) if address in asked)
        if escalated:
            self._outvoted(job_id, answers, guilty=index is not None)
        if index is None or await asyncio.to_thread(self.registry.is_slashed, job_id, signed.node):
            # already slashed: for another of its hops of this job (a node may hold two spans of a route)
            note = "innocent" if not needs_referees(answers) else "no guilty majority"
            note = note if index is None else "already slashed for this job"
            return DisputeOutcome(
                signed.node,
                answers,
                index is not None,
                note=note,
                drawn=len(drawn),
                escalated=escalated,
                picks=picks,
            )
        evidence = SlashEvidence(
            job_id,
            record,
            close_block,
            signed,
            index,
            leaves[index],
            merkle_proof(leaves, index),
            [a.signature for a in group if a.signature is not None],
        )
        result = await asyncio.to_thread(self.registry.slash, evidence)
        self.on_slashed(signed.node)
        log.warning(
            "job %d: %s slashed for leaf %d (guilty verdicts of %s), tx %s",
            job_id,
            signed.node,
            index,
            ", ".join(a.verifier for a in group),
            result.tx_hash,
        )
        return DisputeOutcome(
            signed.node, answers, True, result.tx_hash, drawn=len(drawn), escalated=escalated, picks=picks
        )

    def request_error(
        self, job_id: int, record: JobRecord, package: VerificationPackage, body: dict[str, object]
    ) -> str | None:
        """Why a verifier serving the hop's span would rightly refuse this check (401 or 422; None: it would not):
        the coordinator checks its own request before sending it, so that a 401 or 422 to it is the verifier's
        refusal, never the coordinator's mistake (`_ask`). Reads the chain (approval) and every frame's header."""
        c = package.commitment
        if record.coordinator.lower() != self.account.address.lower():
            return f"job {job_id} names the coordinator {record.coordinator}, not this one"
        try:
            if not self.registry.is_coordinator(self.account.address):
                return f"this coordinator ({self.account.address}) is not approved on chain"
        except ShardnetError as exc:
            return f"this coordinator's approval could not be read ({exc})"
        if not verify_commitment(c, self.domain, job_id=job_id):
            return f"the commitment is not signed by {c.node} for job {job_id} in this registry's domain"
        try:
            VerificationPackage.from_json(body, max_steps=max(1, len(package.steps)))
            positions = sum(read_header(s.input_frame)[2][1] for s in package.steps)
        except (PackageError, ValueError, IndexError) as exc:
            return f"the package does not parse ({exc})"
        if positions != c.positions:
            return f"the inputs hold {positions} positions, the commitment {c.positions}"
        if package.shown is not None and c.span.end != record.num_layers:
            return f"shown tokens on a hop of layers {c.span}, not the last hop of {record.num_layers} layers"
        return None

    def _outvoted(self, job_id: int, answers: Sequence[VerifierAnswer], *, guilty: bool) -> None:
        """After the referees: a verdict against the outcome (guilty of a node not slashed, innocent of one slashed)
        is reported: an honest fp32 verifier was never on the wrong side in the sweeps, a sybil framing or
        shielding is, and its false verdict made every referee recompute the hop. Guilty verdicts kept from a
        slash by refusals (innocent verdicts carry less stake than guilty ones) were not outvoted: reporting
        them would let a shield that refuses push honest verifiers out of routing. A tie still reports them."""
        innocent = sum(a.stake for a in answers if a.guilty is False)
        if not guilty and innocent < sum(a.stake for a in answers if a.guilty):
            return
        for a in answers:
            if a.guilty is not None and a.guilty != guilty:
                verdict = "guilty" if a.guilty else "innocent"
                self.on_outvoted(a.verifier, f"job {job_id}: said {verdict}, outvoted by the referees")

    async def _ask_all(
        self,
        drawn: Sequence[tuple[str, int]],
        job_id: int,
        signed: SignedCommitment,
        body: dict[str, object],
        leaves: Sequence[bytes],
    ) -> list[VerifierAnswer]:
        """Ask these drawn verifiers at once; record faults and flagged tokens."""
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.verify_timeout_s)) as http:
            answers = list(
                await asyncio.gather(
                    *(
                        self._ask(http, address, stake, job_id, signed, body, leaves)
                        for address, stake in drawn
                    )
                )
            )
        for a in answers:
            if a.fault:
                self.on_fault(a.verifier, a.note)
            if a.tokens and a.tokens.get("unsupported"):
                log.warning(
                    "job %d: verifier %s: tokens shown to the client are not supported by the last hop's "
                    "recomputed logits (%s)",
                    job_id,
                    a.verifier,
                    a.note,
                )
        return answers

    async def _ask(
        self,
        http: aiohttp.ClientSession,
        verifier: str,
        stake: int,
        job_id: int,
        signed: SignedCommitment,
        package: dict[str, object],
        leaves: Sequence[bytes],
    ) -> VerifierAnswer:
        endpoint = self.endpoint_of(verifier)
        if not endpoint:
            return VerifierAnswer(verifier, stake, None, note="no endpoint known", fault=True)
        domain = self.domain
        try:
            ticket = sign_ticket(
                self.account,
                worker=verifier,
                session_id="v" + uuid.uuid4().hex,
                job_id=job_id,
                span=signed.span,
                max_positions=max(1, signed.positions),  # the positions the hop committed to
                expires_at=int(time.time()) + 3600,
                chain_id=domain.chain_id,
                registry=domain.registry,
            )
            verify_ticket(
                ticket,
                worker=verifier,
                chain_id=domain.chain_id,
                registry=domain.registry,
                expected_signer=self.account.address,
            )
        except TicketError as exc:  # this coordinator's mistake, not the verifier's: not asked, no fault
            log.error("job %d: no valid ticket for verifier %s: %s", job_id, verifier, exc)
            return VerifierAnswer(verifier, stake, None, note=f"not asked: no valid ticket ({exc})"[:300])
        try:
            async with http.post(
                endpoint.rstrip("/") + "/v1/verify", json={"ticket": ticket, "package": package}
            ) as resp:
                raw = await read_answer_limited(resp, MAX_VERDICT_BYTES)
                status = resp.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            return VerifierAnswer(verifier, stake, None, note=f"no answer: {exc!r}", fault=True)
        except BodyTooLarge as exc:
            return VerifierAnswer(verifier, stake, None, note=str(exc), fault=True)
        try:
            data = loads_limited(raw, max_bytes=64 * 1024, max_depth=4)
        except ValueError:
            data = None  # not JSON: no verdict (a 200 with it is a refusal, not an innocent verdict)
        if status != 200 or not isinstance(data, dict) or not isinstance(data.get("guilty"), bool):
            # Any answer without a verdict is a refusal and a fault, a 401 or 422 to this valid request
            # (`request_error`, the ticket above) too, however the verifier holds its spans now: the registry
            # drew it because it held an assignment covering the hop when the job closed, so the check is its
            # to do. No "cannot check": which span its one endpoint serves, and what it released or announced
            # once the draw was public, are its own choices (docs/verification.md, "401 and 422").
            why = str(data.get("error", "")) if isinstance(data, dict) else ""
            why = why if status != 200 else "answered without a verdict (JSON with a boolean 'guilty')"
            return VerifierAnswer(verifier, stake, None, note=f"HTTP {status} {why}"[:300], fault=True)
        raw_tokens = data.get("tokens")
        tokens = raw_tokens if isinstance(raw_tokens, dict) else None
        if not data.get("guilty"):
            innocent = innocent_signature(data, domain, job_id, signed, verifier)  # what payVerifiers pays
            return VerifierAnswer(
                verifier, stake, False, None, innocent, str(data.get("reason", ""))[:300], tokens=tokens
            )
        try:
            index = int(data["leaf_index"])
            leaf = bytes.fromhex(str(data["leaf"]).removeprefix("0x"))
            signature, signer = answer_signer(data, domain, job_id, signed, index, leaf)
        except (KeyError, TypeError, ValueError) as exc:
            return VerifierAnswer(verifier, stake, None, note=f"malformed verdict ({exc})", fault=True)
        if not 0 <= index < len(leaves) or leaf != leaves[index]:  # the registry's slash would revert on it
            note = f"a verdict on leaf {index} that is not the leaf the accused committed there"
            return VerifierAnswer(verifier, stake, None, note=note, fault=True)
        if signer.lower() != verifier.lower():
            return VerifierAnswer(verifier, stake, None, note=f"verdict signed by {signer}", fault=True)
        return VerifierAnswer(
            verifier, stake, True, index, signature, str(data.get("reason", ""))[:300], tokens=tokens
        )
