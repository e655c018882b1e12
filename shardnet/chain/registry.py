"""Typed Python bindings of the ShardRegistry contract, protocol v2 (specified by contracts/IShardRegistry.sol).

One snake_case method per contract function. Views return frozen dataclasses; writes simulate first
(a revert raises `ContractRevert` naming the custom error and its arguments, nothing is sent), then
send with EIP-1559 fees and return a `TxResult` with the decoded events. Values: shardnet.chain.registry_types;
signed commitments and verdicts: shardnet.chain.commitments.

    registry = Registry.from_deployment(account=my_account)
    registry.register_node("http://10.0.0.5:8100", stake=10**18)
    job_id = client.submit_job(model_id, input_hash, 64, coordinator, value=quote).event("JobSubmitted").args["jobId"]
    coordinator.settle_jobs([Settlement(job_id, client.job_record(job_id), output_hash, signed_commitments)])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from eth_utils import to_checksum_address

from shardnet.chain.abi import as_bytes
from shardnet.chain.commitments import SignedCommitment
from shardnet.chain.errors import ChainError, ContractRevert
from shardnet.chain.registry_base import LOG_RANGE
from shardnet.chain.registry_types import (
    AssignmentInfo,
    HopVerdicts,
    JobInfo,
    JobRecord,
    JobStatus,
    ModelInfo,
    NodeInfo,
    PaidVerdict,
    RegistryParams,
    Settlement,
    SlashEvidence,
    VerificationPayment,
    to_bytes32,
)
from shardnet.chain.registry_verify import VerificationBindings
from shardnet.chain.tx import DecodedEvent, TxResult, rpc
from shardnet.span import LayerSpan
from shardnet.wire.eip712 import Domain

if TYPE_CHECKING:
    pass

__all__ = [
    "LOG_RANGE",
    "AssignmentInfo",
    "DecodedEvent",
    "HopVerdicts",
    "JobInfo",
    "JobRecord",
    "JobStatus",
    "ModelInfo",
    "NodeInfo",
    "PaidVerdict",
    "Registry",
    "RegistryParams",
    "Settlement",
    "SlashEvidence",
    "TxResult",
    "VerificationPayment",
    "to_bytes32",
]

ZERO_ADDRESS = "0x0000000000000000000000000000000000000000"


class Registry(VerificationBindings):
    """Bindings of one deployed ShardRegistry. Without an `account`, only views work."""

    # ------------------------------------------------------------ governance
    def set_coordinator(self, coordinator: str, endpoint: str, approved: bool = True) -> TxResult:
        return self._send("setCoordinator", to_checksum_address(coordinator), endpoint, approved)

    def withdraw_fees(self, to: str) -> TxResult:
        return self._send("withdrawFees", to_checksum_address(to))

    def transfer_ownership(self, new_owner: str) -> TxResult:
        """Step 1 of 2: `new_owner` becomes the pending owner until it calls `accept_ownership`."""
        return self._send("transferOwnership", to_checksum_address(new_owner))

    def accept_ownership(self) -> TxResult:
        return self._send("acceptOwnership")

    def renounce_ownership(self) -> TxResult:
        """The registry is left without an owner: no coordinator can ever be approved again."""
        return self._send("renounceOwnership")

    # ------------------------------------------------------------ nodes
    def register_node(self, endpoint: str, stake: int) -> TxResult:
        return self._send("registerNode", endpoint, value=stake)

    def update_endpoint(self, endpoint: str) -> TxResult:
        return self._send("updateEndpoint", endpoint)

    def add_stake(self, amount: int) -> TxResult:
        return self._send("addStake", value=amount)

    def request_unstake(self, amount: int) -> TxResult:
        return self._send("requestUnstake", amount)

    def withdraw_stake(self) -> TxResult:
        return self._send("withdrawStake")

    # ------------------------------------------------------------ models and shards
    def register_model(
        self, name: str, manifest_cid: str, num_layers: int, price_per_layer_token: int
    ) -> TxResult:
        return self._send("registerModel", name, manifest_cid, num_layers, price_per_layer_token)

    def announce_shard(self, model_id: int, span: LayerSpan) -> TxResult:
        return self._send("announceShard", model_id, span.start, span.end)

    def release_shard(self, assignment_id: int) -> TxResult:
        return self._send("releaseShard", assignment_id)

    # ------------------------------------------------------------ jobs
    def submit_job(
        self, model_id: int, input_hash: bytes | str, max_tokens: int, coordinator: str, value: int
    ) -> TxResult:
        """Submit a job for `coordinator` (the client's choice: only it settles or fails the job)."""
        return self._send(
            "submitJob",
            model_id,
            to_bytes32(input_hash),
            max_tokens,
            to_checksum_address(coordinator),
            value=value,
        )

    def settle_jobs(self, settlements: Sequence[Settlement]) -> TxResult:
        """Settle many jobs of this coordinator in one transaction (one JobSettled event each)."""
        return self._send("settleJobs", [s.as_tuple() for s in settlements])

    def post_commitment(
        self,
        job: JobInfo | tuple[int, JobRecord],
        commitment: SignedCommitment,
        ticket: tuple[str, int, int, bytes, bytes],
    ) -> TxResult:
        """A worker's fallback: post its own signed commitment with the coordinator's ticket
        (`shardnet.wire.tickets.ticket_proof(ticket)`)."""
        job_id, record = (job.job_id, job.record) if isinstance(job, JobInfo) else job
        return self._send("postCommitment", job_id, record.as_tuple(), commitment.as_tuple(), tuple(ticket))

    def collect_posted(self, job_id: int, node: str, span: LayerSpan) -> TxResult:
        """Pay a posted commitment whose provisional window is over (anyone may)."""
        return self._send("collectPosted", job_id, to_checksum_address(node), span.start, span.end)

    def posted_commitment(self, job_id: int, node: str, span: LayerSpan) -> tuple[int, int, int]:
        """(reserved wei, payableAt, state: 0 none, 1 provisional, 2 paid, 3 voided) of a posted commitment."""
        amount, payable_at, state = self._view(
            "postedCommitment", job_id, to_checksum_address(node), span.start, span.end
        )
        return int(amount), int(payable_at), int(state)

    def pending_posted(self) -> int:
        return int(self._view("pendingPosted"))

    def fail_job(self, job_id: int, job: JobRecord, reason: str) -> TxResult:
        return self._send("failJob", job_id, job.as_tuple(), reason)

    def cancel_job(self, job_id: int, job: JobRecord | None = None) -> TxResult:
        """Close a job after its deadline (its client; anyone if its coordinator was revoked); `job` is read from
        the chain's JobSubmitted event when not given."""
        return self._send("cancelJob", job_id, (job or self.job_record(job_id)).as_tuple())

    # ------------------------------------------------------------ slashing and payouts
    def slash(self, evidence: SlashEvidence) -> TxResult:
        return self._send("slash", evidence.as_tuple())

    def claim(self) -> TxResult:
        return self._send("claim")

    # ------------------------------------------------------------ views
    def domain(self) -> Domain:
        """The EIP-712 domain of this registry (what commitments, tickets and verdicts are signed for)."""
        out = self._view("eip712Domain")
        return Domain(int(out[3]), str(out[4]))

    def owner(self) -> str:
        return str(self._view("owner"))

    def pending_owner(self) -> str:
        return str(self._view("pendingOwner"))

    def min_stake(self) -> int:
        return int(self._view("minStake"))

    def unbonding_period(self) -> int:
        return int(self._view("unbondingPeriod"))

    def job_timeout(self) -> int:
        return int(self._view("jobTimeout"))

    def coordinator_fee_bps(self) -> int:
        return int(self._view("coordinatorFeeBps"))

    def slash_bps(self) -> int:
        return int(self._view("slashBps"))

    def max_prompt_tokens(self) -> int:
        """Fixed at deployment: read from the chain once."""
        return self._immutable("maxPromptTokens")

    def approval_delay(self) -> int:
        return int(self._view("approvalDelay"))

    def dispute_window(self) -> int:
        return int(self._view("disputeWindow"))

    def protocol_fee_bps(self) -> int:
        return int(self._view("protocolFeeBps"))

    def max_job_tokens(self) -> int:
        """The largest `maxTokens` submitJob accepts (the registry refuses a larger job before any escrow); fixed
        at deployment: read from the chain once."""
        return self._immutable("maxJobTokens")

    def constant(self, name: str) -> int:
        """A public constant of the contract, e.g. MAX_HOPS, MAX_LIVE_PER_NODE, DRAW_DELAY."""
        return int(self._view(name))

    def params(self) -> RegistryParams:
        return RegistryParams(
            self.min_stake(),
            self.unbonding_period(),
            self.job_timeout(),
            self.coordinator_fee_bps(),
            self.slash_bps(),
            self.max_prompt_tokens(),
            self.approval_delay(),
            self.dispute_window(),
            self.protocol_fee_bps(),
            self.max_job_tokens(),
            self.verify_bps(),
        )

    def is_coordinator(self, account: str) -> bool:
        return bool(self._view("isCoordinator", to_checksum_address(account)))

    def coordinator_info(self, account: str) -> tuple[str, int]:
        """(endpoint, activeFrom): activeFrom is 0 when not approved."""
        endpoint, active_from = self._view("coordinatorInfo", to_checksum_address(account))
        return str(endpoint), int(active_from)

    def coordinator_endpoint(self, account: str) -> str:
        return self.coordinator_info(account)[0]

    def get_node(self, node: str) -> NodeInfo:
        n = self._view("getNode", to_checksum_address(node))
        return NodeInfo(
            to_checksum_address(node),
            n["endpoint"],
            n["stake"],
            n["unbonding"],
            n["unbondingUntil"],
            n["bondedUntil"],
            n["liveAssignments"],
            n["registered"],
            n["jailed"],
        )

    def get_model(self, model_id: int) -> ModelInfo:
        m = self._view("getModel", model_id)
        return ModelInfo(
            model_id, m["name"], m["manifestCid"], m["numLayers"], m["pricePerLayerToken"], m["owner"]
        )

    def model_count(self) -> int:
        return int(self._view("modelCount"))

    def get_assignment(self, assignment_id: int) -> AssignmentInfo:
        a = self._view("getAssignment", assignment_id)
        return AssignmentInfo(assignment_id, a["node"], a["modelId"], a["start"], a["end"], a["live"])

    def assignment_count(self) -> int:
        return int(self._view("assignmentCount"))

    def live_assignments(self, model_id: int) -> list[int]:
        return [int(i) for i in self._view("liveAssignments", model_id)]

    def job_state(self, job_id: int) -> tuple[JobStatus, int, int]:
        """(status, wei paid to posted commitments, number of posted commitments)."""
        status, paid, count = self._view("jobState", job_id)
        return JobStatus(status), int(paid), int(count)

    def _submitted_event(self, job_id: int) -> DecodedEvent:
        events = self.get_logs(self.deploy_block, self.block_number(), ["JobSubmitted"], first_indexed=job_id)
        if not events:
            raise ContractRevert("ShardRegistryUnknownJob", {"jobId": job_id}, b"", "getJob")
        return events[0]

    def job_record(self, job_id: int) -> JobRecord:
        """The job's record, from its JobSubmitted event (the registry stores only its hash)."""
        return JobRecord.from_event(self._submitted_event(job_id).args)

    def get_job(self, job_id: int) -> JobInfo:
        """The job's record and input hash (from JobSubmitted) with its status and posted payments (from jobState)."""
        event = self._submitted_event(job_id)
        status, paid, count = self.job_state(job_id)
        return JobInfo(
            job_id,
            JobRecord.from_event(event.args),
            bytes(event.args["inputHash"]),
            status,
            paid,
            count,
            event.block_number,
        )

    def output_hash(self, job_id: int) -> bytes | None:
        """The outputHash the job was settled with (from JobSettled), or None if it was not settled."""
        events = self.get_logs(self.deploy_block, self.block_number(), ["JobSettled"], first_indexed=job_id)
        return bytes(events[0].args["outputHash"]) if events else None

    def job_count(self) -> int:
        return int(self._view("jobCount"))

    def job_record_hash(self, job_id: int, job: JobRecord) -> bytes:
        return bytes(self._view("jobRecordHash", job_id, job.as_tuple()))

    def settlements_in(self, tx_hash: str) -> list[Settlement]:
        """The settlements a settleJobs transaction carried (its calldata holds every signed commitment)."""
        tx = rpc(self.w3, "eth_getTransactionByHash", [tx_hash])
        if tx is None:
            raise ChainError(f"no transaction {tx_hash} on this chain")
        args = self._function("settleJobs").decode_input(as_bytes(tx["input"]))
        return [Settlement.from_abi(s) for s in args["settlements"]]

    def quote(self, model_id: int, max_tokens: int) -> int:
        return int(self._view("quote", model_id, max_tokens))

    def claimable(self, account: str) -> int:
        return int(self._view("claimable", to_checksum_address(account)))

    def total_staked(self) -> int:
        return int(self._view("totalStaked"))

    def total_unbonding(self) -> int:
        return int(self._view("totalUnbonding"))

    def open_escrow(self) -> int:
        """Escrow of every open job not yet paid to posted commitments (summed from JobSubmitted events and views)."""
        total = 0
        for event in self.get_logs(self.deploy_block, self.block_number(), ["JobSubmitted"]):
            status, posted_paid, _ = self.job_state(int(event.args["jobId"]))
            if status == JobStatus.Open:
                total += int(event.args["escrow"]) - posted_paid
        return total

    def known_accounts(self) -> set[str]:
        """Every address the registry's events name as a node, client, coordinator or payee."""
        fields = ("node", "client", "coordinator", "to", "account")
        return {
            str(value)
            for event in self.get_logs(self.deploy_block, self.block_number())
            for name, value in event.args.items()
            if name in fields and isinstance(value, str) and value != ZERO_ADDRESS
        }

    def total_claimable(self) -> int:
        """Sum of the claimable balances of every account the events name."""
        return sum(self.claimable(a) for a in self.known_accounts())

    def liabilities(self) -> int:
        """Every wei the registry owes: stakes + unbonding + open escrow + claimable balances + protocol fees +
        provisional posted pay + held verification shares. Its
        balance must equal this (the conservation invariant)."""
        return (
            self.total_staked()
            + self.total_unbonding()
            + self.open_escrow()
            + self.total_claimable()
            + self.protocol_fees()
            + self.pending_posted()
            + self.verification_held()
        )

    def protocol_fees(self) -> int:
        return int(self._view("protocolFees"))
