"""`shardnet keygen`, `submit`, `jobs`, `cancel` and `claim`: the client side of paid jobs.

    shardnet keygen --out my-key.json --password-file pw.txt     # prints the new address; fund it
    shardnet submit "Why is the sky blue?" --model SmolLM2-135M-Instruct --max-tokens 32 --key-env MY_KEY
    shardnet jobs --mine --key-env MY_KEY
    shardnet cancel 7 --keystore my-key.json --password-file pw.txt
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from shardnet.cli.chain_args import add_chain_flags, registry_from_args


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "keygen", help="create a new key in an encrypted keystore file (for a client, worker or coordinator)",
        description="Create a new account key, write it encrypted to FILE (mode 0600) and print its address; "
        "fund the address before sending transactions with --keystore FILE.",
    )
    p.add_argument("--out", type=Path, required=True, metavar="FILE", help="keystore file to write (mode 0600)")
    p.add_argument("--password-file", type=Path, metavar="FILE",
                   help="file whose first line is the password (or set SHARDNET_KEY_PASSWORD)")
    p.add_argument("--force", action="store_true", help="overwrite FILE if it exists (the old key is lost)")
    p.set_defaults(func=cmd_keygen)

    p = subparsers.add_parser(
        "submit", help="pay for a job, hand its prompt to a coordinator, print the checked output",
        description="Pay quote() into escrow by contract call, hand the prompt to the coordinator (its endpoint "
        "from the chain, or --coordinator), wait for the job to be finalized (progress on stderr), and print the "
        "output once its keccak256 matches the outputHash on chain.",
    )
    p.add_argument("prompt", help="the prompt text (its keccak256 goes on chain, the text only to the coordinator)")
    p.add_argument("--model", required=True, help="the model: its registered name or its on-chain id")
    p.add_argument("--max-tokens", type=int, default=32, help="most tokens to generate (default 32); sets the escrow")
    p.add_argument("--coordinator", metavar="URL", help="coordinator URL (default: an approved one's endpoint on chain)")
    p.add_argument("--temperature", type=float, default=0.0, help="sampling temperature; 0 is greedy (default 0)")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass (default 1.0: off)")
    p.add_argument("--seed", type=int, help="sampling seed, for reproducible sampled output")
    p.add_argument("--raw", action="store_true",
                   help="send the prompt as it is; by default the coordinator wraps it in the model's chat template "
                   "as one user message (the on-chain inputHash is of your prompt either way)")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for the job (default 600)")
    p.add_argument("--json", action="store_true", help="print a JSON record (job id, output, route, commitments)")
    add_chain_flags(p, needs_key=True)
    p.set_defaults(func=cmd_submit)

    p = subparsers.add_parser("jobs", help="list jobs on chain with their status", description="List jobs on chain with their status.")
    p.add_argument("--mine", action="store_true", help="only the jobs submitted by your key")
    add_chain_flags(p, needs_key=False)
    p.set_defaults(func=cmd_jobs)

    p = subparsers.add_parser("cancel", help="cancel your job after its deadline: the whole escrow is refunded", description="Cancel your job after its deadline: the whole escrow is refunded.")
    p.add_argument("job_id", type=int, help="the job's on-chain id")
    add_chain_flags(p, needs_key=True)
    p.set_defaults(func=cmd_cancel)

    p = subparsers.add_parser("claim", help="withdraw your claimable balance (refunds of failed or cancelled jobs)", description="Withdraw your claimable balance (refunds of failed or cancelled jobs).")
    add_chain_flags(p, needs_key=True)
    p.set_defaults(func=cmd_claim)


def cmd_keygen(args: argparse.Namespace) -> int:
    from shardnet.keys import read_password, write_keystore

    address = write_keystore(args.out, read_password(args.password_file), overwrite=args.force)
    print(f"wrote keystore {args.out} for address {address}")
    return 0


def cmd_submit(args: argparse.Namespace) -> int:
    from shardnet.client import ShardnetClient

    client = ShardnetClient(registry_from_args(args, needs_key=True), coordinator_url=args.coordinator)
    outcome = client.submit(
        args.prompt, model=args.model, max_tokens=args.max_tokens, temperature=args.temperature,
        top_p=args.top_p, seed=args.seed, chat=not args.raw, timeout_s=args.timeout,
        progress=lambda message: print(message, file=sys.stderr, flush=True),
    )
    if args.json:
        print(json.dumps({"job_id": outcome.job_id, "output": outcome.text,
                          "output_hash": "0x" + outcome.output_hash.hex(), "escrow_wei": outcome.escrow_wei,
                          "route": outcome.route, "commitments": outcome.commitments,
                          "seconds": round(outcome.seconds, 3)}))
    else:
        print(outcome.text)
    return 0


def cmd_jobs(args: argparse.Namespace) -> int:
    from shardnet.client import ShardnetClient

    registry = registry_from_args(args, needs_key=args.mine)
    mine = registry.account.address if args.mine else None
    rows = ShardnetClient(registry).jobs(mine)
    print(f"{'job':>5}  {'status':<10} {'model':>5} {'max_tokens':>10} {'escrow_wei':>22}  client")
    for j in rows:
        print(f"{j.job_id:>5}  {j.status.name:<10} {j.model_id:>5} {j.max_tokens:>10} {j.escrow:>22}  {j.client}")
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    from shardnet.client import ShardnetClient

    tx = ShardnetClient(registry_from_args(args, needs_key=True)).cancel(args.job_id)
    print(f"job {args.job_id} cancelled (tx {tx}); its escrow is claimable: run `shardnet claim` to withdraw it")
    return 0


def cmd_claim(args: argparse.Namespace) -> int:
    from shardnet.client import ShardnetClient

    amount, tx = ShardnetClient(registry_from_args(args, needs_key=True)).claim()
    print(f"claimed {amount} wei (tx {tx})")
    return 0
