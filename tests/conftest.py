"""Shared pytest configuration. Fixtures live in plugin modules, one per area, each owned by its package."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# workers the tests start compute on the CPU in float32 even where a GPU is present (their default, auto, would
# pick it and bfloat16, and the end-to-end tests compare with the float32 CPU reference bitwise); the device
# tests choose theirs with SHARDNET_TEST_DEVICE (tests/model/test_device.py, scripts/gpu_check.sh)
os.environ.setdefault("SHARDNET_WORKER_DEVICE", "cpu")

pytest_plugins = [
    "tests.fixtures_chain",  # anvil / hardhat devnets, deployed registry, funded accounts
    "tests.fixtures_model",  # small random models of every family, built from configs
    "tests.fixtures_store",  # models imported into content-addressed stores (tiny and the real SmolLM2)
]
