"""The one place for benchmarks: `scripts/bench.py NAME [flags]`, NAME one of the modules of scripts/benchmarks/.

    .venv/bin/python scripts/bench.py network    # 3 workers + coordinator vs single-process transformers, gas
    .venv/bin/python scripts/bench.py workers    # the worker data plane: relay vs push, compute share, /health
    .venv/bin/python scripts/bench.py hop        # one hop's data-plane cost, the model left out
    .venv/bin/python scripts/bench.py concurrency --levels 1,4,16,64   # batched sessions through the API
    .venv/bin/python scripts/bench.py netns      # single process vs loopback vs namespaces with 5 ms links (root)
    .venv/bin/python scripts/bench.py events     # chain event -> worker / coordinator handler, pushed vs polled
    .venv/bin/python scripts/bench.py waterfall  # a token's path on loopback cut at every mark: where its time goes

`scripts/bench.py NAME --help` lists each one's flags.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parent
for folder in (
    SCRIPTS,
    SCRIPTS.parent,
):  # the benchmarks package (here) and the project (the repo root)
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

BENCHMARKS = {
    "network": "SmolLM2 over 3 workers and a coordinator vs single-process transformers: speed, a kill, gas",
    "workers": "the worker data plane: client relay vs push mode, compute share, /health during a prefill",
    "hop": "one hop's data-plane cost through a worker server whose block answers at once",
    "concurrency": "SmolLM2 over 3 batching workers, N API requests at once: tokens/s, per-token p50/p95, RSS",
    "netns": "SmolLM2 over 3 workers: single process vs loopback vs network namespaces with a delay on every link",
    "events": "ms from a JobSubmitted receipt to the worker's and coordinator's handlers: pushed (ws) vs polled",
    "waterfall": "a token's path over 3 workers on loopback (push mode), cut at every traced mark: median ms each",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scripts/bench.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="benchmark", required=True, metavar="NAME")
    for name, summary in BENCHMARKS.items():
        module = importlib.import_module(f"benchmarks.{name}")
        sub = commands.add_parser(
            name,
            help=summary,
            description=module.__doc__,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        module.add_arguments(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(importlib.import_module(f"benchmarks.{args.benchmark}").run(args))


if __name__ == "__main__":
    sys.exit(main())
