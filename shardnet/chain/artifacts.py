"""Compiled contract artifacts (ABI + bytecode) shipped in `shardnet/chain/artifacts/<Name>.json`.

They are committed, so running shardnet needs no Solidity compiler; `shardnet compile` rebuilds them.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from shardnet.chain.errors import ChainError

ARTIFACTS_DIR = Path(__file__).resolve().parent / "artifacts"
REGISTRY_CONTRACT = "ShardRegistry"


@dataclass(frozen=True)
class ContractArtifact:
    """One compiled contract: its name, ABI (list of entries) and creation bytecode (hex, 0x-prefixed)."""

    name: str
    abi: tuple[dict[str, Any], ...]
    bytecode: str

    def entries(self, kind: str) -> list[dict[str, Any]]:
        """ABI entries of one type: 'function', 'event', 'error', 'constructor'."""
        return [e for e in self.abi if e.get("type") == kind]


def artifact_path(name: str = REGISTRY_CONTRACT) -> Path:
    """Where the artifact of contract `name` lives (`SHARDNET_ARTIFACTS_DIR` overrides the folder)."""
    folder = Path(os.environ.get("SHARDNET_ARTIFACTS_DIR") or ARTIFACTS_DIR)
    return folder / f"{name}.json"


@lru_cache(maxsize=8)
def load_artifact(name: str = REGISTRY_CONTRACT) -> ContractArtifact:
    """Read and check the committed artifact of contract `name`."""
    path = artifact_path(name)
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise ChainError(f"contract artifact {path} is missing: run `shardnet compile` to build it") from exc
    except json.JSONDecodeError as exc:
        raise ChainError(
            f"contract artifact {path} is not valid JSON ({exc}): run `shardnet compile`"
        ) from exc
    abi = raw.get("abi")
    bytecode = raw.get("bytecode")
    if isinstance(bytecode, dict):  # hardhat / solc layout {"object": "..."}
        bytecode = bytecode.get("object")
    if not isinstance(abi, list) or not isinstance(bytecode, str):
        raise ChainError(f"contract artifact {path} lacks 'abi' or 'bytecode': run `shardnet compile`")
    if not bytecode.startswith("0x"):
        bytecode = "0x" + bytecode
    return ContractArtifact(name=name, abi=tuple(abi), bytecode=bytecode)
