"""shardnet: large language models split into layer blocks across many machines, coordinated on chain."""

from __future__ import annotations

import sys

__version__ = "0.1.0"

#: Python's recursion limit for every shardnet process. py_ecc (imported by eth-account and web3) raises it
#: to 100,000 on import, which lets deeply nested input overflow the C stack (SIGSEGV) instead of raising
#: RecursionError; it is imported here once (about 30 ms) and the limit put back.
RECURSION_LIMIT = max(1000, min(sys.getrecursionlimit(), 10_000))


def _keep_recursion_limit_sane() -> None:
    try:
        import py_ecc  # noqa: F401 - imported for its side effect, undone below
    except ImportError:
        pass
    sys.setrecursionlimit(RECURSION_LIMIT)


_keep_recursion_limit_sane()
