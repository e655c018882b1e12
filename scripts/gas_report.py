#!/usr/bin/env python
"""Gas used by every ShardRegistry function (protocol v2), measured by receipts on a fresh anvil devnet.

Runs a 3-worker job end to end (register x3, register model, announce x3, submit, one settleJobs with the
three workers' signed commitments, claims, release + unstake + withdraw after the dispute window), then 16 jobs
settled in one transaction, then the remaining functions (a worker's own postCommitment, fail, cancel, collectPosted, slash with
drawn verifiers' verdicts, fees, ownership), prints a markdown table of gas per function, the lines
`whole 3-worker job: N gas` and `16 jobs settled in one transaction: N gas per job`, the jobs per second a
30M-gas block every 2 s carries before (protocol v1, 661k gas per job) and after, and writes it all to docs/gas.md.

Usage: scripts/gas_report.py [--output docs/gas.md] [--no-write]
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
from collections import defaultdict
from pathlib import Path

from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils import keccak

from shardnet.chain.commitments import (
    INNOCENT_LEAF,
    INNOCENT_LEAF_INDEX,
    SignedCommitment,
    sign_commitment,
    sign_verdict,
)
from shardnet.chain.deploy import deploy_registry
from shardnet.chain.devnet import DEV_KEYS, Devnet
from shardnet.chain.registry import (
    HopVerdicts,
    PaidVerdict,
    Registry,
    RegistryParams,
    Settlement,
    SlashEvidence,
    TxResult,
    VerificationPayment,
)
from shardnet.chain.tx import rpc
from shardnet.span import LayerSpan
from shardnet.wire.commitment import merkle_proof, merkle_root, step_hash
from shardnet.wire.tickets import sign_ticket, ticket_proof

REPO = Path(__file__).resolve().parents[1]
ARTIFACT = REPO / "shardnet" / "chain" / "artifacts" / "ShardRegistry.json"
LAYERS = 30
SPANS = (LayerSpan(0, 10), LayerSpan(10, 20), LayerSpan(20, 30))
PRICE = 10**9  # wei per layer-token
MAX_TOKENS = 64
POSITIONS = 40 + MAX_TOKENS  # a 40-token prompt and the full answer
BATCH = 16
PARAMS = (
    RegistryParams()
)  # the devnet defaults: 1 ether min stake, 60 s unbonding, 600 s job timeout, no protocol fee
V1_GAS_PER_JOB = (
    661_000  # protocol v1: submit 152k + route 198k + 3 commitments 175k + finalize 135k (issue 9)
)
BLOCK_GAS = 30_000_000
BLOCK_SECONDS = 2


class GasLog:
    """Gas used per contract function, in call order."""

    def __init__(self) -> None:
        self.used: dict[str, list[int]] = defaultdict(list)
        self.section: dict[str, str] = {}

    def add(self, function: str, gas: int, section: str) -> None:
        self.used[function].append(gas)
        self.section.setdefault(function, section)

    def record(self, function: str, result: TxResult, section: str) -> TxResult:
        self.add(function, result.gas_used, section)
        return result

    def table(self) -> str:
        lines = ["| function | part | calls | min | mean | max |", "|---|---|---:|---:|---:|---:|"]
        for name, gas in self.used.items():
            lines.append(
                f"| `{name}` | {self.section[name]} | {len(gas)} | {min(gas):,} | {round(statistics.mean(gas)):,} | {max(gas):,} |"
            )
        return "\n".join(lines)


def _leaves(tag: str, steps: int = MAX_TOKENS) -> list[bytes]:
    return [step_hash(f"{tag} {i}".encode()) for i in range(steps)]


class Flow:
    """One deployment with three workers, a client and the owner as the coordinator."""

    def __init__(self, w3: object, params: RegistryParams, log: GasLog, record: bool = True) -> None:
        self.accounts = [Account.from_key(k) for k in DEV_KEYS]
        owner = self.accounts[0]
        self.workers = self.accounts[1:4]
        self.client_account = self.accounts[4]
        self.log = log
        dep = deploy_registry(w3, owner, params)  # type: ignore[arg-type]
        self.w3 = w3
        self.gov = Registry(w3, dep.registry, owner, deploy_block=dep.deploy_block)  # type: ignore[arg-type]
        self.deploy_block = dep.deploy_block
        self.domain = self.gov.domain()
        self.nodes = [self.gov.with_account(a) for a in self.workers]
        self.cli = self.gov.with_account(self.client_account)
        self.model_id = 0
        self.shards: list[int] = []

    def rec(self, name: str, result: TxResult, section: str) -> TxResult:
        return self.log.record(name, result, section)

    def commit(self, worker: LocalAccount, job_id: int, i: int) -> SignedCommitment:
        root = merkle_root(_leaves(f"job {job_id} hop {i}"))
        return sign_commitment(
            worker,
            self.domain,
            job_id=job_id,
            span=SPANS[i],
            positions=POSITIONS,
            steps=MAX_TOKENS,
            root=root,
        )

    def submit(self, section: str | None) -> int:
        result = self.cli.submit_job(
            self.model_id,
            keccak(text="Tell me a story"),
            MAX_TOKENS,
            self.gov.account.address,  # type: ignore[union-attr]
            self.cli.quote(self.model_id, MAX_TOKENS),
        )
        if section:
            self.rec("submitJob", result, section)
        return int(result.event("JobSubmitted").args["jobId"])

    def settlement(self, job_id: int) -> Settlement:
        hops = [self.commit(w, job_id, i) for i, w in enumerate(self.workers)]
        return Settlement(job_id, self.gov.job_record(job_id), keccak(text=f"output {job_id}"), hops)


def _mine(w3: object, blocks: int = 1, seconds: int = 0) -> None:
    if seconds:
        rpc(w3, "evm_increaseTime", [seconds])  # type: ignore[arg-type]
    for _ in range(blocks):
        rpc(w3, "evm_mine", [])  # type: ignore[arg-type]


def run(log: GasLog) -> dict[str, int]:
    """Runs every flow; returns the headline figures (gas)."""
    figures: dict[str, int] = {}
    with Devnet.start("anvil") as net:
        w3 = net.web3()
        f = Flow(w3, PARAMS, log)
        block = rpc(w3, "eth_getBlockByNumber", [hex(f.deploy_block), False])
        receipt = rpc(w3, "eth_getTransactionReceipt", [block["transactions"][0]])
        log.add("deployment", int(receipt["gasUsed"], 16), "setup")
        e2e = "3-worker job"
        owner = f.accounts[0]
        f.rec("setCoordinator", f.gov.set_coordinator(owner.address, "http://127.0.0.1:9000", True), "setup")
        for i, reg in enumerate(f.nodes):
            f.rec("registerNode", reg.register_node(f"http://127.0.0.1:{8101 + i}", PARAMS.min_stake), e2e)
        f.model_id = int(
            f.rec(
                "registerModel",
                f.gov.register_model("SmolLM2-135M-Instruct", "bafkrei" + "a" * 52, LAYERS, PRICE),
                e2e,
            )
            .event("ModelRegistered")
            .args["modelId"]
        )
        f.shards = [
            int(
                f.rec("announceShard", reg.announce_shard(f.model_id, span), e2e)
                .event("ShardAnnounced")
                .args["assignmentId"]
            )
            for reg, span in zip(f.nodes, SPANS, strict=True)
        ]
        # the first job of this client and coordinator pays for their fresh balance slots; the second is steady state
        first = f.submit(e2e)
        first_settle = f.rec("settleJobs", f.gov.settle_jobs([f.settlement(first)]), e2e)
        for reg in (*f.nodes, f.gov, f.cli):
            f.rec("claim", reg.claim(), e2e)
        submit = f.cli.submit_job(
            f.model_id,
            keccak(text="Tell me a story"),
            MAX_TOKENS,
            owner.address,
            f.cli.quote(f.model_id, MAX_TOKENS),
        )
        f.rec("submitJob", submit, e2e)
        job_id = int(submit.event("JobSubmitted").args["jobId"])
        settle = f.rec("settleJobs", f.gov.settle_jobs([f.settlement(job_id)]), e2e)
        figures["submit"] = submit.gas_used
        figures["settle"] = settle.gas_used
        figures["first_job"] = log.used["submitJob"][0] + first_settle.gas_used
        figures["whole_job"] = submit.gas_used + settle.gas_used

        ids = [f.submit("16-job batch") for _ in range(BATCH)]
        batch = f.gov.settle_jobs([f.settlement(j) for j in ids])
        log.add("settleJobs (16 jobs)", batch.gas_used, "16-job batch")
        figures["batch_per_job"] = batch.gas_used // BATCH
        figures["batch_submit"] = round(statistics.mean(log.used["submitJob"][-BATCH:]))

        other = "other"
        _other_functions(f, log, other)
        _verification(f, log, figures)
        owed = f.gov.liabilities()
        if f.gov.balance() != owed:
            raise SystemExit(f"invariant broken: balance {f.gov.balance()} != owed {owed}")
        _governance(w3, log)
    return figures


def _other_functions(f: Flow, log: GasLog, section: str) -> None:
    w3 = f.w3
    owner = f.accounts[0]
    f.rec("updateEndpoint", f.nodes[0].update_endpoint("http://10.0.0.1:8101"), section)
    f.rec("addStake", f.nodes[1].add_stake(PARAMS.min_stake), section)
    # a worker's own commitment, with the coordinator's ticket
    posted = f.submit(None)
    ticket = sign_ticket(
        owner,
        worker=f.workers[2].address,
        session_id="s-1",
        job_id=posted,
        span=SPANS[2],
        max_positions=POSITIONS,
        expires_at=2**40,
        chain_id=f.domain.chain_id,
        registry=f.domain.registry,
    )
    f.rec(
        "postCommitment",
        f.nodes[2].post_commitment(
            (posted, f.gov.job_record(posted)), f.commit(f.workers[2], posted, 2), ticket_proof(ticket)
        ),
        section,
    )
    f.rec("failJob", f.gov.fail_job(posted, f.gov.job_record(posted), "worker 1 did not answer"), section)
    expired = f.submit(None)
    _mine(w3, seconds=PARAMS.job_timeout + 1)
    f.rec("cancelJob", f.cli.cancel_job(expired), section)
    # the post was provisional for the dispute window (over by now): anyone pays it to the worker
    f.rec("collectPosted", f.cli.collect_posted(posted, f.workers[2].address, SPANS[2]), section)
    # slash: two verifiers staked on [0, 30) are drawn and sign a verdict against worker 1's leaf 3
    verifiers = f.accounts[5:7]
    for v in verifiers:
        reg = f.gov.with_account(v)
        reg.register_node("http://127.0.0.1:8200", PARAMS.min_stake)
        reg.announce_shard(f.model_id, LayerSpan(0, LAYERS))
    disputed = f.submit(None)
    settlement = f.settlement(disputed)
    close_block = f.gov.settle_jobs([settlement]).block_number
    _mine(w3, blocks=3)
    c = settlement.hops[0]
    steps = _leaves(f"job {disputed} hop 0")
    verdicts = [
        sign_verdict(v, f.domain, job_id=disputed, accused=c.node, root=c.root, leaf_index=3, leaf=steps[3])
        for v in verifiers
    ]
    evidence = SlashEvidence(
        disputed, settlement.job, close_block, c, 3, steps[3], merkle_proof(steps, 3), verdicts
    )
    f.rec("slash", f.cli.slash(evidence), section)
    # unbonding: the third worker leaves once the dispute window after its last paid hop is over
    f.rec("releaseShard", f.nodes[2].release_shard(f.shards[2]), section)
    f.rec("requestUnstake", f.nodes[2].request_unstake(PARAMS.min_stake), section)
    _mine(w3, seconds=max(PARAMS.unbonding_period, PARAMS.dispute_window) + 1)
    f.rec("withdrawStake", f.nodes[2].withdraw_stake(), section)
    f.rec("claim", f.nodes[2].claim(), section)


def _verification(f: Flow, log: GasLog, figures: dict[str, int]) -> None:
    """Paid verification: one 3-worker job's six verdicts (two drawn verifiers per hop, both innocent), then 16
    such jobs in one payVerifiers, then a share refunded to the client after the draw's reach. The two verifiers
    staked on [0, 30) for the slash above are each hop's only candidates."""
    section = "verification"
    verifiers = {a.address: a for a in f.accounts[5:7]}

    def payment(settlement: Settlement, close_block: int) -> VerificationPayment:
        hops = []
        for c in settlement.sorted_hops():
            drawn = f.gov.draw_verifiers(
                settlement.job_id, settlement.job, close_block, c.node, c.span, c.root
            )
            verdicts = [
                PaidVerdict(
                    INNOCENT_LEAF_INDEX,
                    INNOCENT_LEAF,
                    sign_verdict(
                        verifiers[a],
                        f.domain,
                        job_id=settlement.job_id,
                        accused=c.node,
                        root=c.root,
                        leaf_index=INNOCENT_LEAF_INDEX,
                        leaf=INNOCENT_LEAF,
                    ),
                )
                for a, _ in drawn[:2]
            ]
            hops.append(HopVerdicts(c, 2, verdicts))
        return VerificationPayment(settlement.job_id, settlement.job, close_block, hops)

    one = f.settlement(f.submit(None))
    close_block = f.gov.settle_jobs([one]).block_number
    _mine(f.w3, blocks=3)
    paid = f.rec("payVerifiers", f.gov.pay_verifiers([payment(one, close_block)]), section)
    figures["pay_one"] = paid.gas_used
    many = [f.settlement(f.submit(None)) for _ in range(BATCH)]
    close_block = f.gov.settle_jobs(many).block_number
    _mine(f.w3, blocks=3)
    batch = f.gov.pay_verifiers([payment(s, close_block) for s in many])
    log.add("payVerifiers (16 jobs)", batch.gas_used, section)
    figures["pay_batch_per_job"] = batch.gas_used // BATCH
    refunded = f.settlement(f.submit(None))
    close_block = f.gov.settle_jobs([refunded]).block_number
    _mine(f.w3, blocks=2 + 256 + 1)
    f.rec(
        "refundVerification", f.cli.refund_verification(refunded.job_id, refunded.job, close_block), section
    )


def _governance(w3: object, log: GasLog) -> None:
    """A second registry with a 1 % protocol fee: fees, then a two-step ownership transfer, then renouncing."""
    f = Flow(w3, RegistryParams(protocol_fee_bps=100), log)
    owner, heir = f.accounts[0], f.accounts[7]
    section = "governance"
    f.gov.set_coordinator(owner.address, "http://127.0.0.1:9000", True)
    f.nodes[0].register_node("http://127.0.0.1:8101", PARAMS.min_stake)
    f.model_id = int(
        f.gov.register_model("m", "bafkreim", 10, PRICE).event("ModelRegistered").args["modelId"]
    )
    f.shards = [
        int(
            f.nodes[0]
            .announce_shard(f.model_id, LayerSpan(0, 10))
            .event("ShardAnnounced")
            .args["assignmentId"]
        )
    ]
    job_id = f.submit(None)
    c = sign_commitment(
        f.workers[0],
        f.domain,
        job_id=job_id,
        span=LayerSpan(0, 10),
        positions=POSITIONS,
        steps=4,
        root=merkle_root(_leaves("g", 4)),
    )
    f.gov.settle_jobs([Settlement(job_id, f.gov.job_record(job_id), keccak(text="out"), [c])])
    f.rec("withdrawFees", f.gov.withdraw_fees(heir.address), section)
    f.rec("transferOwnership", f.gov.transfer_ownership(heir.address), section)
    heir_reg = f.gov.with_account(heir)
    f.rec("acceptOwnership", heir_reg.accept_ownership(), section)
    f.rec("renounceOwnership", heir_reg.renounce_ownership(), section)


def headline(figures: dict[str, int]) -> list[str]:
    whole, per_job = figures["whole_job"], figures["batch_per_job"]
    batched = figures["batch_submit"] + per_job
    return [
        f"whole 3-worker job: {whole} gas",
        f"16 jobs settled in one transaction: {per_job} gas per job",
        f"jobs/s a {BLOCK_GAS // 10**6}M-gas block every {BLOCK_SECONDS} s carries: before (v1, {V1_GAS_PER_JOB // 1000}k gas/job) "
        f"{BLOCK_GAS / V1_GAS_PER_JOB / BLOCK_SECONDS:.1f}; after, one job per settlement ({whole:,} gas/job) "
        f"{BLOCK_GAS / whole / BLOCK_SECONDS:.1f}; after, settled 16 at a time ({batched:,} gas/job with its submission) "
        f"{BLOCK_GAS / batched / BLOCK_SECONDS:.1f}",
        f"verifiers of a 3-worker job paid (6 verdicts): {figures['pay_one']} gas; 16 jobs in one payVerifiers: "
        f"{figures['pay_batch_per_job']} gas per job",
    ]


def report(log: GasLog, figures: dict[str, int]) -> str:
    artifact = json.loads(ARTIFACT.read_text())
    size = (len(artifact["deployedBytecode"]) - 2) // 2
    settings = artifact["settings"]
    return "\n".join(
        [
            "# ShardRegistry gas report (protocol v2)",
            "",
            "Generated by `.venv/bin/python scripts/gas_report.py` (do not edit by hand) on a fresh anvil devnet",
            f"(`node_modules/@foundry-rs/anvil`), contract compiled with solc {artifact['compiler']}, "
            f"evmVersion {settings['evmVersion']}, optimizer {settings['optimizer']['runs']} runs, viaIR {settings.get('viaIR', False)}; "
            f"runtime code {size:,} bytes (EIP-170 limit 24,576).",
            "",
            *headline(figures),
            "",
            f"A *whole 3-worker job* is `submitJob` + one `settleJobs` carrying the three workers' EIP-712 signed "
            f"commitments ({figures['submit']:,} + {figures['settle']:,} gas), everything but the claims, measured on the "
            f"client's and coordinator's second job (their first pays for fresh balance slots: {figures['first_job']:,} gas). "
            f"The *16 jobs* line is one `settleJobs` of 16 jobs divided by 16, on top of their submissions "
            f"({figures['batch_submit']:,} gas each).",
            "",
            f"The *3-worker job* part runs a {LAYERS}-layer model split {', '.join(f'[{s.start},{s.end})' for s in SPANS)} "
            f"over three nodes ({MAX_TOKENS} max tokens, {POSITIONS} positions per hop). The *other* part covers a worker's "
            "own `postCommitment` (with the coordinator's ticket; provisional for the dispute window), `failJob`, "
            "`cancelJob` after the deadline, `collectPosted` paying that post after its window, a `slash` "
            "with two drawn verifiers' verdicts and a Merkle proof, and a node leaving after the dispute window; "
            "*verification* pays the two drawn verifiers' signed verdicts on each hop of a settled job from the share "
            "its settlement held (`payVerifiers`: each hop's draw recomputed, each verdict's signer checked against it), "
            "one job and then 16 jobs in one call, and refunds a share nobody spent once no draw can reach its job "
            "(`refundVerification`); *governance* runs on a second registry with a 1 % protocol fee. Gas is the receipt's `gasUsed` (including "
            "the 21,000 base and calldata).",
            "",
            log.table(),
            "",
            "Notes: the first `registerNode`/`claim` of an account pays for fresh storage slots, later ones less; a "
            "`settleJobs` costs one signature check (~3,000 gas plus ~300 bytes of calldata) per hop and two storage "
            "writes per job (`settleJobs` has no reentrancy guard: it makes no external call); the guard of `claim` "
            "(OpenZeppelin `ReentrancyGuardTransient`) uses transient storage (EIP-1153). The verifier draw's stake "
            "checkpoints cost each stake change one more storage write (`registerNode`, `addStake`, `withdrawStake`, "
            "`slash`), `releaseShard` writes the node's count of recent releases (they hold model slots while a draw "
            "can reach them) and a `slash` binary-searches each candidate's checkpoints; settlement reads none of it. "
            "A per-hop check of the node's "
            "live assignment was measured and left out: one more cold storage read per hop put a whole job at 151,893 "
            "gas and a 16-job batch at 43,079 gas per job, over both targets. Settlement holds each job's verification "
            "share with no storage of its own (a flag in the job's slot): ~800 gas a whole job, ~200 a batched one. "
            "`payVerifiers` in a batch of 16 costs per job ~15k gas (the job record's check, the client's refund, the "
            "event), per hop ~30k (the node's signature and the redraw: ~36 warm storage reads and ~6,700 EVM steps) and "
            "per verdict ~7k (a signature and a credit), measured by varying the batch with eth_estimateGas. "
            "`postCommitment`, `collectPosted`, `slash`, `payVerifiers` and `refundVerification` run in `ShardDisputes` "
            "by DELEGATECALL (2,400-3,500 gas more each); the deployment creates both contracts.",
            "",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Measure the gas of every ShardRegistry function on a fresh anvil."
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=REPO / "docs" / "gas.md",
        help="markdown file to write the report to (default: docs/gas.md)",
    )
    parser.add_argument("--no-write", action="store_true", help="only print the report, write no file")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    log = GasLog()
    figures = run(log)
    text = report(log, figures)
    print(text)
    if not args.no_write:
        args.output.write_text(text)
        print(f"wrote {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
