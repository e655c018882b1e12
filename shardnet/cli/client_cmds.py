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
from typing import Any

from shardnet.cli.chain_args import add_chain_flags, registry_from_args
from shardnet.errors import ConfigError

#: Escrow (ether) `shardnet submit` pays without asking.
DEFAULT_MAX_ESCROW_ETH = 0.1


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "keygen",
        help="create a new key in an encrypted keystore file (for a client, worker or coordinator)",
        description="Create a new account key, write it encrypted to FILE (mode 0600) and print its address; "
        "fund the address before sending transactions with --keystore FILE.",
    )
    p.add_argument(
        "--out", type=Path, required=True, metavar="FILE", help="keystore file to write (mode 0600)"
    )
    p.add_argument(
        "--password-file",
        type=Path,
        metavar="FILE",
        help="file whose first line is the password (or set SHARDNET_KEY_PASSWORD)",
    )
    p.add_argument("--force", action="store_true", help="overwrite FILE if it exists (the old key is lost)")
    p.set_defaults(func=cmd_keygen)

    p = subparsers.add_parser(
        "submit",
        help="pay for a job, hand its prompt to a coordinator, print the checked output",
        description="Ask the coordinator (its endpoint from the chain, or --coordinator) whether the job can run "
        "(live workers cover the model, the prompt fits maxPromptTokens, --max-tokens fits the route), show the "
        "quote, confirm it above --max-escrow, pay it into escrow by contract call, hand the prompt over, wait for "
        "the job to be finalized (progress on stderr), and print the output once its keccak256 matches the "
        "outputHash on chain. Nothing is paid when a check fails.",
    )
    p.add_argument(
        "prompt", help="the prompt text (its keccak256 goes on chain, the text only to the coordinator)"
    )
    p.add_argument("--model", required=True, help="the model: its registered name or its on-chain id")
    p.add_argument(
        "--max-tokens", type=int, default=32, help="most tokens to generate (default 32); sets the escrow"
    )
    p.add_argument(
        "--coordinator", metavar="URL", help="coordinator URL (default: an approved one's endpoint on chain)"
    )
    p.add_argument(
        "--temperature", type=float, default=0.0, help="sampling temperature; 0 is greedy (default 0)"
    )
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass (default 1.0: off)")
    p.add_argument("--seed", type=int, help="sampling seed, for reproducible sampled output")
    p.add_argument(
        "--adapter",
        metavar="FILE",
        help="a LoRA adapter (safetensors, as `shardnet finetune --out` saves it) to run the model with; "
        "uploaded to the coordinator and its CID signed into the prompt hand-over",
    )
    p.add_argument(
        "--raw",
        action="store_true",
        help="send the prompt as it is; by default the coordinator wraps it in the model's chat template "
        "as one user message (the on-chain inputHash is of your prompt either way)",
    )
    p.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for the job (default 600)")
    p.add_argument(
        "--json", action="store_true", help="print a JSON record (job id, output, route, commitments)"
    )
    p.add_argument(
        "--max-escrow",
        type=float,
        default=DEFAULT_MAX_ESCROW_ETH,
        metavar="ETH",
        help="pay up to this much escrow (ether) without asking; above it ask on the terminal, or refuse "
        f"when stdin is not a terminal (default {DEFAULT_MAX_ESCROW_ETH})",
    )
    p.add_argument(
        "--yes", action="store_true", help="pay whatever the quote is, without asking (for scripts)"
    )
    add_chain_flags(p, needs_key=True)
    p.set_defaults(func=cmd_submit)

    p = subparsers.add_parser(
        "jobs",
        help="list jobs on chain with their status",
        description="List jobs on chain with their status.",
    )
    p.add_argument("--mine", action="store_true", help="only the jobs submitted by your key")
    add_chain_flags(p, needs_key=False)
    p.set_defaults(func=cmd_jobs)

    p = subparsers.add_parser(
        "balance",
        help="an account's wallet, claimable balance and escrow in open jobs (no key needed)",
        description="Print an account's wallet balance, its claimable balance in the registry (refunds, payouts) "
        "and the escrow locked in its open jobs. Give ADDRESS, or a key (--key-env/--keystore) for your own.",
    )
    p.add_argument(
        "address", nargs="?", metavar="ADDRESS", help="the account (0x...); default: your key's address"
    )
    add_chain_flags(p, needs_key=False, key_note=" (only needed without ADDRESS)")
    p.set_defaults(func=cmd_balance)

    p = subparsers.add_parser(
        "cancel",
        help="cancel your job after its deadline: the whole escrow is refunded",
        description="Cancel your job after its deadline: the whole escrow is refunded.",
    )
    p.add_argument("job_id", type=int, help="the job's on-chain id")
    add_chain_flags(p, needs_key=True)
    p.set_defaults(func=cmd_cancel)

    p = subparsers.add_parser(
        "claim",
        help="withdraw your claimable balance (refunds of failed or cancelled jobs)",
        description="Withdraw your claimable balance (refunds of failed or cancelled jobs).",
    )
    add_chain_flags(p, needs_key=True)
    p.set_defaults(func=cmd_claim)


def cmd_keygen(args: argparse.Namespace) -> int:
    from shardnet.keys import read_password, write_keystore

    address = write_keystore(args.out, read_password(args.password_file), overwrite=args.force)
    print(f"wrote keystore {args.out} for address {address}")
    return 0


def confirm_escrow(max_escrow_eth: float, yes: bool) -> Any:
    """The `confirm(quote_wei, preflight)` of `ShardnetClient.submit` for the --max-escrow and --yes flags."""
    from shardnet.client import format_eth

    if not max_escrow_eth >= 0:  # also refuses NaN
        raise ConfigError(f"--max-escrow must be an amount of ether >= 0, not {max_escrow_eth}")
    limit = int(max_escrow_eth * 10**18)

    def confirm(quote: int, preflight: dict[str, Any]) -> bool:
        if yes or quote <= limit:
            return True
        if not sys.stdin.isatty():
            raise ConfigError(
                f"the escrow, {format_eth(quote)}, is above --max-escrow {max_escrow_eth:g} ETH and "
                "stdin is not a terminal to ask: nothing was paid; lower --max-tokens, raise "
                "--max-escrow, or pass --yes"
            )
        answer = input(
            f"pay {format_eth(quote)} into escrow (above --max-escrow {max_escrow_eth:g} ETH)? [y/N] "
        )
        return answer.strip().lower() in ("y", "yes")

    return confirm


def cmd_submit(args: argparse.Namespace) -> int:
    from shardnet.client import ShardnetClient, check_max_tokens

    check_max_tokens(args.max_tokens)
    confirm = confirm_escrow(args.max_escrow, args.yes)
    adapter = None
    if args.adapter:
        try:
            adapter = Path(args.adapter).read_bytes()
        except OSError as exc:
            raise ConfigError(f"cannot read --adapter {args.adapter}: {exc.strerror}") from exc
    client = ShardnetClient(registry_from_args(args, needs_key=True), coordinator_url=args.coordinator)
    outcome = client.submit(
        args.prompt,
        model=args.model,
        max_tokens=args.max_tokens,
        temperature=args.temperature,
        top_p=args.top_p,
        seed=args.seed,
        chat=not args.raw,
        timeout_s=args.timeout,
        progress=lambda message: print(message, file=sys.stderr, flush=True),
        confirm=confirm,
        adapter=adapter,
    )
    if args.json:
        print(
            json.dumps(
                {
                    "job_id": outcome.job_id,
                    "output": outcome.text,
                    "output_hash": "0x" + outcome.output_hash.hex(),
                    "escrow_wei": outcome.escrow_wei,
                    "route": outcome.route,
                    "commitments": outcome.commitments,
                    "seconds": round(outcome.seconds, 3),
                }
            )
        )
    else:
        print(outcome.text)
    return 0


def cmd_jobs(args: argparse.Namespace) -> int:
    from shardnet.client import ShardnetClient, format_eth

    registry = registry_from_args(args, needs_key=args.mine)
    mine = registry.account.address if args.mine else None
    rows = ShardnetClient(registry).jobs(mine)
    names = {i: registry.get_model(i).name for i in sorted({j.model_id for j in rows})}
    print(f"{'job':>5}  {'status':<10} {'model':<24} {'max_tokens':>10} {'escrow':>16}  client")
    for j in rows:
        print(
            f"{j.job_id:>5}  {j.status.name.lower():<10} {names[j.model_id]:<24} {j.max_tokens:>10} "
            f"{format_eth(j.escrow):>16}  {j.client}"
        )
    return 0


def cmd_balance(args: argparse.Namespace) -> int:
    from eth_utils import is_address, to_checksum_address

    from shardnet.client import ShardnetClient, format_eth

    if args.address is not None and not is_address(args.address):
        raise ConfigError(f"{args.address!r} is not an account address (0x and 40 hex digits)")
    registry = registry_from_args(args, needs_key=False)
    if args.address is None and registry.account is None:
        raise ConfigError("whose balance? give an ADDRESS, or your key with --key-env VAR or --keystore FILE")
    address = to_checksum_address(args.address) if args.address else registry.account.address
    open_jobs = ShardnetClient(registry).open_jobs(address)
    escrowed = sum(j.escrow for j in open_jobs)
    print(f"address    {address}")
    print(f"wallet     {format_eth(registry.w3.eth.get_balance(address))}")
    print(
        f"claimable  {format_eth(registry.claimable(address))}"
        + ("  (`shardnet claim` withdraws it)" if registry.claimable(address) else "")
    )
    print(
        f"escrowed   {format_eth(escrowed)} in {len(open_jobs)} open jobs"
        + (f" ({', '.join(f'#{j.job_id}' for j in open_jobs)})" if open_jobs else "")
    )
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    from shardnet.client import ShardnetClient

    tx = ShardnetClient(registry_from_args(args, needs_key=True)).cancel(args.job_id)
    print(
        f"job {args.job_id} cancelled (tx {tx}); its escrow is claimable: run `shardnet claim` to withdraw it"
    )
    return 0


def cmd_claim(args: argparse.Namespace) -> int:
    from shardnet.client import ShardnetClient

    amount, tx = ShardnetClient(registry_from_args(args, needs_key=True)).claim()
    print(f"claimed {amount} wei (tx {tx})")
    return 0
