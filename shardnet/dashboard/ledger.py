"""The dashboard's ledger: the registry's events folded, one at a time and once each, into recent jobs (a bounded
window), per-node earnings and slashes, running totals and per-minute buckets of the last hour.

Amounts are what the events say; the per-hop split of a settlement is recomputed from its calldata (read
through `Registry.settlements_in`) by the contract's own rule (`positions x span x price`, capped by the escrow
left, only hops whose `paidHops` bit is set) and shown only when it adds up to the event's `paidToNodes`.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Protocol

from shardnet.chain.registry_types import JobRecord, Settlement
from shardnet.chain.tx import DecodedEvent

#: Jobs kept in the recent-jobs window (older ones still count in the totals, earnings and chart)
MAX_RECENT_JOBS = 200
#: The events whose handlers read the chain (block time, receipt, settlement calldata)
_READS_BEFORE_FOLDING = frozenset({"JobSubmitted", "JobSettled", "JobFailed", "JobCancelled"})
#: The chart: one bucket a minute over the last hour
BUCKET_S = 60
BUCKETS = 60


class ChainFacts(Protocol):
    """What the ledger needs read from the chain besides the events (cached by its implementation)."""

    def block_time(self, block: int) -> int: ...

    def gas_used(self, tx_hash: str) -> int | None: ...

    def settlements(self, tx_hash: str) -> list[Settlement]: ...

    def posted_paid(self, job_id: int) -> int: ...

    def verification_held(self, job_id: int, record: JobRecord) -> int: ...


@dataclass
class HopView:
    node: str
    start: int
    end: int
    positions: int
    steps: int
    paid_wei: int | None  # None: the split could not be recomputed exactly
    how: str  # "settled", "unpaid" (skipped by the registry) or "posted" (the worker posted it itself)

    def as_json(self) -> dict[str, Any]:
        return {
            "node": self.node,
            "span": [self.start, self.end],
            "positions": self.positions,
            "steps": self.steps,
            "paid_wei": None if self.paid_wei is None else str(self.paid_wei),
            "how": self.how,
        }


@dataclass
class JobView:
    job_id: int
    model_id: int
    client: str
    coordinator: str
    input_hash: str
    max_tokens: int
    escrow: int
    submitted_block: int
    submitted_at: int
    gas_submit: int | None
    status: str = "open"
    closed_at: int | None = None
    close_tx: str | None = None
    gas_close_tx: int | None = None
    close_batch: int = 1
    output_hash: str | None = None
    paid_to_nodes: int = 0
    coordinator_fee: int = 0
    refund: int = 0
    posted_paid: int = 0
    fail_reason: str | None = None
    hops: list[HopView] = field(default_factory=list)

    @property
    def tokens(self) -> int:
        """Token positions the job computed (each hop computes all of them; the largest count is the job's)."""
        return max((h.positions for h in self.hops), default=0)

    def as_json(self) -> dict[str, Any]:
        return {
            "job_id": self.job_id,
            "model_id": self.model_id,
            "client": self.client,
            "coordinator": self.coordinator,
            "input_hash": self.input_hash,
            "output_hash": self.output_hash,
            "max_tokens": self.max_tokens,
            "status": self.status,
            "escrow_wei": str(self.escrow),
            "submitted_at": self.submitted_at,
            "closed_at": self.closed_at,
            "latency_s": None if self.closed_at is None else self.closed_at - self.submitted_at,
            "tokens": self.tokens,
            "route": [h.as_json() for h in sorted(self.hops, key=lambda h: (h.start, h.node.lower()))],
            "paid_to_nodes_wei": str(self.paid_to_nodes + self.posted_paid),
            "coordinator_fee_wei": str(self.coordinator_fee),
            "refund_wei": str(self.refund),
            "fail_reason": self.fail_reason,
            "gas_submit": self.gas_submit,
            "gas_close_tx": self.gas_close_tx,
            "close_batch": self.close_batch,
            "close_tx": self.close_tx,
        }


@dataclass
class Totals:
    jobs: int = 0
    settled: int = 0
    failed: int = 0
    cancelled: int = 0
    tokens: int = 0
    escrowed_wei: int = 0
    paid_to_nodes_wei: int = 0
    coordinator_fees_wei: int = 0
    protocol_fees_wei: int = 0
    refunded_wei: int = 0
    slashes: int = 0
    slashed_wei: int = 0

    def as_json(self) -> dict[str, Any]:
        return {
            "jobs": self.jobs,
            "settled": self.settled,
            "failed": self.failed,
            "cancelled": self.cancelled,
            "open": self.jobs - self.settled - self.failed - self.cancelled,
            "tokens": self.tokens,
            "escrowed_wei": str(self.escrowed_wei),
            "paid_wei": str(self.paid_to_nodes_wei + self.coordinator_fees_wei),
            "paid_to_nodes_wei": str(self.paid_to_nodes_wei),
            "coordinator_fees_wei": str(self.coordinator_fees_wei),
            "protocol_fees_wei": str(self.protocol_fees_wei),
            "refunded_wei": str(self.refunded_wei),
            "slashes": self.slashes,
            "slashed_wei": str(self.slashed_wei),
        }


class Ledger:
    """Folds events in chain order; `apply` each event exactly once (the snapshot's cursor sees to it)."""

    def __init__(self, facts: ChainFacts) -> None:
        self.facts = facts
        self.jobs: OrderedDict[int, JobView] = OrderedDict()
        self.totals = Totals()
        self.earned: dict[str, int] = {}  # node (lowercase) -> wei paid to it by settlements and posts
        self.slashed: dict[str, int] = {}  # node (lowercase) -> wei slashed
        self.touched_nodes: set[str] = set()  # nodes whose views must be read again
        self.touched_models: set[int] = set()  # models whose assignments must be read again
        self.all_models_touched = False
        self.coordinators: dict[str, tuple[str, bool]] = {}  # address -> (endpoint, approved)
        self._minute_tokens: dict[int, int] = {}
        self._minute_jobs: dict[int, int] = {}

    # ------------------------------------------------------------ folding
    def apply(self, event: DecodedEvent) -> None:
        """Fold one event: all or nothing. Every chain read it needs is made before anything changes, so a read
        that fails (a flaky node) leaves the ledger as it was and the event is folded again, once, later."""
        a = event.args
        handler = getattr(self, "_on_" + event.name, None)
        if event.name in _READS_BEFORE_FOLDING:
            self._read_facts(event, a)
        if handler is not None:
            handler(event, a)
        for key in ("node", "account"):  # any event naming a node changes its views (stake, claimable, ...)
            if isinstance(a.get(key), str):
                self.touched_nodes.add(str(a[key]).lower())
        if "modelId" in a and event.name in ("ModelRegistered", "ShardAnnounced", "ShardReleased"):
            self.touched_models.add(int(a["modelId"]))

    def _read_facts(self, event: DecodedEvent, a: dict[str, Any]) -> None:
        """The reads a job event's handler makes (the facts cache them, so the handler's own reads then hit)."""
        self.facts.block_time(event.block_number)
        self.facts.gas_used(event.tx_hash)
        if event.name == "JobSettled":
            self.facts.settlements(event.tx_hash)

    def _on_CoordinatorSet(self, event: DecodedEvent, a: dict[str, Any]) -> None:
        self.coordinators[str(a["coordinator"]).lower()] = (str(a["endpoint"]), bool(a["approved"]))

    def _on_NodeSlashed(self, event: DecodedEvent, a: dict[str, Any]) -> None:
        node = str(a["node"]).lower()
        self.slashed[node] = self.slashed.get(node, 0) + int(a["amount"])
        self.totals.slashes += 1
        self.totals.slashed_wei += int(a["amount"])
        self.all_models_touched = True  # a slashed node is jailed and its assignments released

    def _on_JobSubmitted(self, event: DecodedEvent, a: dict[str, Any]) -> None:
        at = self.facts.block_time(event.block_number)
        job = JobView(
            job_id=int(a["jobId"]),
            model_id=int(a["modelId"]),
            client=str(a["client"]),
            coordinator=str(a["coordinator"]),
            input_hash="0x" + bytes(a["inputHash"]).hex(),
            max_tokens=int(a["maxTokens"]),
            escrow=int(a["escrow"]),
            submitted_block=event.block_number,
            submitted_at=at,
            gas_submit=self.facts.gas_used(event.tx_hash),
        )
        self.jobs[job.job_id] = job
        while len(self.jobs) > MAX_RECENT_JOBS:
            self.jobs.popitem(last=False)
        self.totals.jobs += 1
        self.totals.escrowed_wei += job.escrow
        self._bump(self._minute_jobs, at, 1)

    def _on_CommitmentPosted(self, event: DecodedEvent, a: dict[str, Any]) -> None:
        node, paid = str(a["node"]), int(a["paid"])
        self.earned[node.lower()] = self.earned.get(node.lower(), 0) + paid
        self.totals.paid_to_nodes_wei += paid
        job = self.jobs.get(int(a["jobId"]))
        if job is not None:
            job.posted_paid += paid
            job.hops.append(
                HopView(
                    node, int(a["start"]), int(a["end"]), int(a["positions"]), int(a["steps"]), paid, "posted"
                )
            )

    def _on_JobSettled(self, event: DecodedEvent, a: dict[str, Any]) -> None:
        job_id = int(a["jobId"])
        settlements = self.facts.settlements(event.tx_hash)
        settlement = next((s for s in settlements if s.job_id == job_id), None)
        job = self.jobs.get(job_id)
        hops = self._settled_hops(job_id, job, settlement, int(a["paidHops"]), int(a["paidToNodes"]))
        # the protocol's cut is in no event: what the escrow left after posts, hop pay, the fee and the refund
        cut = 0
        escrow = (
            job.escrow if job is not None else (settlement.job.escrow if settlement is not None else None)
        )
        if escrow is not None:
            posted = job.posted_paid if job is not None else self.facts.posted_paid(job_id)
            # the settlement also held the job's verification share (paid to verifiers or refunded later)
            record = settlement.job if settlement is not None else None
            held = self.facts.verification_held(job_id, record) if record is not None else 0
            cut = max(
                escrow - posted - int(a["paidToNodes"]) - int(a["coordinatorFee"]) - int(a["refund"]) - held,
                0,
            )
        for hop in hops:
            self.touched_nodes.add(hop.node.lower())  # its claimable balance changed
            if hop.paid_wei:
                self.earned[hop.node.lower()] = self.earned.get(hop.node.lower(), 0) + hop.paid_wei
        self.totals.settled += 1
        self.totals.protocol_fees_wei += cut
        self.totals.paid_to_nodes_wei += int(a["paidToNodes"])
        self.totals.coordinator_fees_wei += int(a["coordinatorFee"])
        self.totals.refunded_wei += int(a["refund"])
        at = self.facts.block_time(event.block_number)
        tokens = max((h.positions for h in hops), default=0)
        self.totals.tokens += tokens
        self._bump(self._minute_tokens, at, tokens)
        if job is not None:
            job.hops = [h for h in job.hops if h.how == "posted"] + hops
            job.paid_to_nodes = int(a["paidToNodes"])
            job.coordinator_fee = int(a["coordinatorFee"])
            job.output_hash = "0x" + bytes(a["outputHash"]).hex()
            job.close_batch = max(len(settlements), 1)
            self._close(job, "settled", event, int(a["refund"]))

    def _settled_hops(
        self, job_id: int, job: JobView | None, settlement: Settlement | None, mask: int, paid_total: int
    ) -> list[HopView]:
        """The settlement's hops with what each was paid, by the contract's rule (see the module docstring)."""
        if settlement is None:
            return []
        posted = job.posted_paid if job is not None else self.facts.posted_paid(job_id)
        remaining = settlement.job.escrow - posted
        posted_spans = {
            (h.node.lower(), h.start, h.end) for h in (job.hops if job else []) if h.how == "posted"
        }
        out: list[HopView] = []
        for i, c in enumerate(settlement.sorted_hops()):
            pay: int | None = 0
            how = "unpaid"
            if mask >> i & 1:
                pay = min(c.positions * (c.end - c.start) * settlement.job.price, remaining)
                remaining -= pay
                how = "settled"
            elif (c.node.lower(), c.start, c.end) in posted_spans:
                continue  # paid when the worker posted it (shown as "posted")
            out.append(HopView(c.node, c.start, c.end, c.positions, c.steps, pay, how))
        if sum(h.paid_wei or 0 for h in out) != paid_total:
            for h in out:
                h.paid_wei = None
        return out

    def _on_VerificationPaid(self, event: DecodedEvent, a: dict[str, Any]) -> None:
        # a settled job's held verification share: what its verifiers did not take went back to the client
        self.totals.refunded_wei += int(a["refund"])

    def _on_JobFailed(self, event: DecodedEvent, a: dict[str, Any]) -> None:
        self.totals.failed += 1
        self.totals.refunded_wei += int(a["refund"])
        job = self.jobs.get(int(a["jobId"]))
        if job is not None:
            job.fail_reason = str(a["reason"])[:200]
            self._close(job, "failed", event, int(a["refund"]))

    def _on_JobCancelled(self, event: DecodedEvent, a: dict[str, Any]) -> None:
        self.totals.cancelled += 1
        self.totals.refunded_wei += int(a["refund"])
        job = self.jobs.get(int(a["jobId"]))
        if job is not None:
            self._close(job, "cancelled", event, int(a["refund"]))

    def _close(self, job: JobView, status: str, event: DecodedEvent, refund: int) -> None:
        job.status = status
        job.refund = refund
        job.closed_at = self.facts.block_time(event.block_number)
        job.close_tx = event.tx_hash
        job.gas_close_tx = self.facts.gas_used(event.tx_hash)

    # ------------------------------------------------------------ the chart
    @staticmethod
    def _bump(buckets: dict[int, int], at: int, amount: int) -> None:
        minute = at // BUCKET_S
        buckets[minute] = buckets.get(minute, 0) + amount
        for old in [m for m in buckets if m < minute - 2 * BUCKETS]:  # bounded: about two hours kept
            del buckets[old]

    def series(self, now: int) -> dict[str, Any]:
        """Tokens per second and jobs submitted per minute, one point a minute over the hour before `now`."""
        last = now // BUCKET_S
        minutes = range(last - BUCKETS + 1, last + 1)
        return {
            "bucket_s": BUCKET_S,
            "end": now,
            "tokens_per_s": [round(self._minute_tokens.get(m, 0) / BUCKET_S, 3) for m in minutes],
            "jobs": [self._minute_jobs.get(m, 0) for m in minutes],
        }
