#!/usr/bin/env python
"""Compile contracts/*.sol into shardnet/chain/artifacts/ (same as `python -m shardnet.chain.compile`).

Usage: scripts/compile_contracts.py [--check]
"""

from __future__ import annotations

import sys

from shardnet.chain.compile import main

if __name__ == "__main__":
    sys.exit(main())
