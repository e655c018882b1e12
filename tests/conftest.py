"""Shared pytest configuration. Fixtures live in plugin modules, one per area, each owned by its package."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

pytest_plugins = [
    "tests.fixtures_chain",  # anvil / hardhat devnets, deployed registry, funded accounts
    "tests.fixtures_model",  # small random models of every family, built from configs
    "tests.fixtures_store",  # models imported into content-addressed stores (tiny and the real SmolLM2)
]
