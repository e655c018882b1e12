"""Registry bindings of disputes and paid verification: the verifier draw, slash status and paying verifiers.

A settled job's settlement holds a verification share of its escrow (`verifyBps` x HELD_VERDICTS of its largest
possible pay); its coordinator pays every drawn verifier's signed verdict from it with `pay_verifiers` (the rest goes
back to the client at once), or anyone returns it to the client with `refund_verification` once no draw can reach
the job any more (DRAW_DELAY + 256 blocks after its close).
"""

from __future__ import annotations

from collections.abc import Sequence

from eth_utils import to_checksum_address

from shardnet.chain.registry_base import RegistryCore
from shardnet.chain.registry_types import JobRecord, VerificationPayment, to_bytes32
from shardnet.chain.tx import TxResult
from shardnet.span import LayerSpan


class VerificationBindings(RegistryCore):
    """The dispute and verification functions of the registry (mixed into `Registry`)."""

    def draw_verifiers(
        self, job_id: int, job: JobRecord, close_block: int, node: str, span: LayerSpan, root: bytes
    ) -> list[tuple[str, int]]:
        """The verifiers (address, stake) the contract draws for a dispute over `node`'s commitment `root`:
        MAX_VERIFIERS of them at most; the first k are the draw of k (what `pay_verifiers`' `picks` names)."""
        verifiers, stakes = self._view(
            "drawVerifiers",
            job_id,
            job.as_tuple(),
            close_block,
            to_checksum_address(node),
            span.start,
            span.end,
            to_bytes32(root),
        )
        return [(str(v), int(s)) for v, s in zip(verifiers, stakes, strict=True)]

    def is_slashed(self, job_id: int, node: str) -> bool:
        return bool(self._view("isSlashed", job_id, to_checksum_address(node)))

    def pay_verifiers(self, payments: Sequence[VerificationPayment]) -> TxResult:
        """Pay the drawn verifiers' verdicts on settled jobs (at most MAX_PAY_BATCH jobs; the sender must be their
        coordinator) from each job's held verification share; the rest goes back to each job's client."""
        return self._send("payVerifiers", [p.as_tuple() for p in payments])

    def refund_verification(self, job_id: int, job: JobRecord, close_block: int) -> TxResult:
        """Return a settled job's unspent verification share to its client (anyone may, once no draw can reach the
        job: DRAW_DELAY + 256 blocks after `close_block`)."""
        return self._send("refundVerification", job_id, job.as_tuple(), close_block)

    def verify_bps(self) -> int:
        """Each paid verdict's pay in basis points of its hop's pay; fixed at deployment."""
        return self._immutable("verifyBps")

    def verification_share(self, job: JobRecord) -> int:
        """The verification share a settlement of `job` holds: HELD_VERDICTS x verifyBps of its largest pay."""
        positions = job.max_tokens + self._immutable("maxPromptTokens")
        base = job.num_layers * positions * job.price
        return base * self.verify_bps() * self._immutable("HELD_VERDICTS") // 10_000

    def verification_held(self) -> int:
        """Verification shares held by settlements and not yet paid or refunded (the registry keeps no total, to
        save every settlement a storage write: summed from JobSubmitted events and `verification_state`)."""
        total = 0
        for event in self.get_logs(self.deploy_block, self.block_number(), ["JobSubmitted"]):
            job_id = int(event.args["jobId"])
            if self.verification_state(job_id)[1]:
                total += self.verification_share(JobRecord.from_event(event.args))
        return total

    def verification_state(self, job_id: int) -> tuple[bool, bool]:
        """(whether the job's settlement held a verification share, whether it is still unspent)."""
        held, unspent = self._view("verificationState", job_id)
        return bool(held), bool(unspent)
