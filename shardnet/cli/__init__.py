"""The `shardnet` command: devnet, deploy, compile, model import/fetch, the client (submit, jobs, cancel), localnet,
dashboard.

Each group of subcommands lives in its own module with a `register(subparsers)` function; this module
only assembles them. Command modules import heavy libraries (torch, web3) inside their handlers so
that `shardnet --help` stays fast.
"""

from __future__ import annotations

import argparse
import atexit
import gc
import importlib
import logging
import os
import sys
import warnings
from pathlib import Path

from shardnet.errors import ShardnetError

#: set to a folder: every command (worker, coordinator, shardnet) writes a cProfile of its main thread there
PROFILE_ENV = "SHARDNET_PROFILE_DIR"

# module name -> registers its subcommands; a module that does not exist yet is skipped.
_COMMAND_MODULES = (
    "shardnet.cli.chain_cmds",
    "shardnet.cli.model_cmds",
    "shardnet.cli.client_cmds",
    "shardnet.cli.localnet_cmd",
    "shardnet.cli.dashboard_cmd",
    "shardnet.cli.store_cmds",
    "shardnet.cli.keyholder_cmd",
    "shardnet.cli.finetune_cmd",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="shardnet",
        description="shardnet: run language models split into layer blocks across machines, paid and checked on chain.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:
                continue
            raise
        module.register(sub)
    return parser


def quiet_library_noise() -> None:
    """Keep libraries' noise out of what a command prints and out of role logs: Hugging Face progress bars
    unless stderr is a terminal, and transformers' FutureWarning about `past_key_values` (the adapters pass it
    on purpose, for the transformers versions that still need it)."""
    if not sys.stderr.isatty():
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    warnings.filterwarnings("ignore", message=r".*`past_key_values` is deprecated", category=FutureWarning)


def freeze_heap_at_exit() -> None:
    """Keep the interpreter's teardown from garbage-collecting, after the command has finished, every object it made.

    After the atexit handlers, Python's finalization runs full collections over the whole heap: with torch,
    transformers and web3 loaded (~0.5 M tracked objects) they took 1.4-2 s on a loaded 2-core machine, so a
    worker lingered that long after logging 'worker stopped' (so did a coordinator, and `shardnet localnet`
    on top of the roles it stops one after another). `gc.freeze()` puts those objects out of the collector's
    reach. By then the command has stopped its servers and closed its databases; the atexit handlers still run
    (logging flushes and closes its handlers), stdout and stderr are still flushed, and objects are still
    freed by their reference counts. What is given up: objects in reference cycles (a module's globals are
    one, through its functions) are left to the operating system with the rest of the process's memory, so
    a block-buffered file kept open in a module global and never flushed or closed would lose its last
    block (the trace file is line-buffered; Python never promised `__del__` for objects alive at exit).
    """
    gc.freeze()


def run_command(parser: argparse.ArgumentParser, argv: list[str] | None = None) -> int:
    """Parse `argv`, set up logging and run the chosen subcommand's `func`: the one entry point of every
    shardnet command (`shardnet`, `worker`, `coordinator`). A ShardnetError becomes `error: ...` and exit 1."""
    args = parser.parse_args(argv)
    atexit.unregister(freeze_heap_at_exit)  # once, also when a test runs several commands in one process
    atexit.register(freeze_heap_at_exit)
    quiet_library_noise()
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        if os.environ.get(PROFILE_ENV):
            return _profiled(parser.prog, args)
        return int(args.func(args) or 0)
    except ShardnetError as exc:
        from shardnet.chain.errors import ContractRevert
        from shardnet.chain.explain import explain

        print(f"error: {explain(exc) if isinstance(exc, ContractRevert) else exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _profiled(prog: str, args: argparse.Namespace) -> int:
    """Run the command under cProfile (its main thread) and write the stats to $SHARDNET_PROFILE_DIR/PROG-PID.prof."""
    import cProfile

    profiler = cProfile.Profile()
    try:
        return int(profiler.runcall(args.func, args) or 0)
    finally:
        profiler.dump_stats(str(Path(os.environ[PROFILE_ENV]) / f"{prog}-{os.getpid()}.prof"))


def main(argv: list[str] | None = None) -> int:
    return run_command(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
