#!/usr/bin/env python
"""Gas used by every ShardRegistry function, measured on a fresh anvil devnet.

Runs a 3-worker job end to end (register x3, register model, announce x3, submit, assignRoute, 3 commitments,
finalize, claims, release + unstake + withdraw), then the remaining functions (failover hop, fail, cancel,
slash, fees, ...), prints a markdown table of gas per function and writes it to docs/gas.md.

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
from eth_utils import keccak

from shardnet.chain.deploy import deploy_registry
from shardnet.chain.devnet import DEV_KEYS, Devnet
from shardnet.chain.registry import Registry, RegistryParams, TxResult
from shardnet.chain.tx import rpc
from shardnet.span import LayerSpan

REPO = Path(__file__).resolve().parents[1]
ARTIFACT = REPO / "shardnet" / "chain" / "artifacts" / "ShardRegistry.json"
LAYERS = 30
SPANS = (LayerSpan(0, 10), LayerSpan(10, 20), LayerSpan(20, 30))
PRICE = 10**9  # wei per layer-token
MAX_TOKENS = 64
PARAMS = RegistryParams()  # the devnet defaults: 1 ether min stake, 60 s unbonding, 600 s job timeout


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


def run(log: GasLog) -> None:
    owner, n1, n2, n3, client = (Account.from_key(k) for k in DEV_KEYS[:5])
    with Devnet.start("anvil") as net:
        w3 = net.web3()
        dep = deploy_registry(w3, owner, PARAMS)
        block = rpc(w3, "eth_getBlockByNumber", [hex(dep.deploy_block), False])
        receipt = rpc(w3, "eth_getTransactionReceipt", [block["transactions"][0]])
        log.add("deployment", int(receipt["gasUsed"], 16), "setup")
        gov = Registry(w3, dep.registry, owner, deploy_block=dep.deploy_block)
        nodes = [gov.with_account(a) for a in (n1, n2, n3)]
        cli = gov.with_account(client)
        e2e = "3-worker job"

        log.record("setCoordinator", gov.set_coordinator(owner.address, "http://127.0.0.1:9000", True), "setup")
        for i, reg in enumerate(nodes):
            log.record("registerNode", reg.register_node(f"http://127.0.0.1:{8101 + i}", PARAMS.min_stake), e2e)
        model_id = log.record(
            "registerModel", gov.register_model("SmolLM2-135M-Instruct", "bafkrei" + "a" * 52, LAYERS, PRICE), e2e
        ).event("ModelRegistered").args["modelId"]
        shard_ids = [
            log.record("announceShard", reg.announce_shard(model_id, span), e2e).event("ShardAnnounced").args["assignmentId"]
            for reg, span in zip(nodes, SPANS, strict=True)
        ]

        def submit(section: str) -> int:
            quote = cli.quote(model_id, MAX_TOKENS)
            result = cli.submit_job(model_id, keccak(text="Tell me a story"), MAX_TOKENS, quote)
            return int(log.record("submitJob", result, section).event("JobSubmitted").args["jobId"])

        route = [(a.address, span) for a, span in zip((n1, n2, n3), SPANS, strict=True)]
        job_id = submit(e2e)
        log.record("assignRoute", gov.assign_route(job_id, route), e2e)
        for i, reg in enumerate(nodes):
            log.record("postCommitment", reg.post_commitment(job_id, keccak(text=f"steps of hop {i}")), e2e)
        tokens = [span.end - span.start for span in SPANS]
        used_positions = 40 + MAX_TOKENS  # a 40-token prompt and the full answer
        log.record("finalizeJob", gov.finalize_job(job_id, keccak(text="Once upon a time"), [t * used_positions for t in tokens]), e2e)
        for reg in (*nodes, gov, cli):
            log.record("claim", reg.claim(), e2e)
        log.record("releaseShard", nodes[2].release_shard(shard_ids[2]), e2e)
        log.record("requestUnstake", nodes[2].request_unstake(PARAMS.min_stake), e2e)
        net_rpc = lambda method, *params: rpc(w3, method, list(params))  # noqa: E731
        net_rpc("evm_increaseTime", PARAMS.unbonding_period)
        net_rpc("evm_mine")
        log.record("withdrawStake", nodes[2].withdraw_stake(), e2e)
        log.record("claim", nodes[2].claim(), e2e)

        other = "other"
        log.record("updateEndpoint", nodes[0].update_endpoint("http://10.0.0.1:8101"), other)
        log.record("addStake", nodes[1].add_stake(PARAMS.min_stake), other)
        nodes[2].register_node("http://127.0.0.1:8103", PARAMS.min_stake)
        nodes[2].announce_shard(model_id, SPANS[2])
        failover = submit(other)
        gov.assign_route(failover, route)
        log.record("addHop", gov.add_hop(failover, n3.address, LayerSpan(20, 30)), other)
        log.record("failJob", gov.fail_job(failover, "worker 3 did not answer"), other)
        expired = submit(other)
        net_rpc("evm_increaseTime", PARAMS.job_timeout + 1)
        net_rpc("evm_mine")
        log.record("cancelJob", cli.cancel_job(expired), other)
        log.record("slash", gov.slash(n2.address, keccak(text="evidence"), failover), other)
        log.record("withdrawFees", gov.withdraw_fees(owner.address), other)
        owed = (gov.total_staked() + gov.total_unbonding() + gov.total_escrow() + gov.total_claimable()
                + gov.protocol_fees())
        if gov.balance() != owed:
            raise SystemExit(f"invariant broken: balance {gov.balance()} != owed {owed}")


def report(log: GasLog) -> str:
    artifact = json.loads(ARTIFACT.read_text())
    size = (len(artifact["deployedBytecode"]) - 2) // 2
    return "\n".join([
        "# ShardRegistry gas report",
        "",
        "Generated by `.venv/bin/python scripts/gas_report.py` (do not edit by hand) on a fresh anvil devnet",
        f"(`node_modules/@foundry-rs/anvil`), contract compiled with solc {artifact['compiler']}, "
        f"evmVersion {artifact['settings']['evmVersion']}, optimizer {artifact['settings']['optimizer']['runs']} runs; "
        f"runtime code {size:,} bytes (EIP-170 limit 24,576).",
        "",
        f"The *3-worker job* part runs a {LAYERS}-layer model split {', '.join(f'[{s.start},{s.end})' for s in SPANS)} "
        f"over three nodes: register x3, register the model, announce x3, submit ({MAX_TOKENS} max tokens), route, "
        "three commitments, finalize, claims by the three nodes, the coordinator and the client, then one node "
        "releases its shard, unstakes, withdraws after the unbonding period and claims. The *other* part covers "
        "the remaining functions (failover hop, fail, cancel after the deadline, slash, fees). Gas is the "
        "receipt's `gasUsed` (including the 21,000 base and calldata).",
        "",
        log.table(),
        "",
        "Notes: the first `registerNode`/`claim` of an account pays for fresh storage slots, later ones less; "
        "`assignRoute`, `finalizeJob` and `postCommitment` grow linearly with the number of hops; the reentrancy "
        "guard uses transient storage (EIP-1153), ~200 gas per guarded call.",
        "",
    ])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Measure the gas of every ShardRegistry function on a fresh anvil.")
    parser.add_argument("--output", type=Path, default=REPO / "docs" / "gas.md",
                        help="markdown file to write the report to (default: docs/gas.md)")
    parser.add_argument("--no-write", action="store_true", help="only print the report, write no file")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    log = GasLog()
    run(log)
    text = report(log)
    print(text)
    if not args.no_write:
        args.output.write_text(text)
        print(f"wrote {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
