"""shardnet: large language models split into layer blocks across many machines, coordinated on chain."""

from __future__ import annotations

__version__ = "0.1.0"
