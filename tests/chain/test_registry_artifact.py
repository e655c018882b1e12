"""The committed ShardRegistry artifact matches its sources; the compiler wrapper and hardhat agree with it."""

from __future__ import annotations

import copy
import json
import logging
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import solcx

from shardnet.chain.compile import SETTINGS, SOLC_VERSION, artifact_is_stale, main, solc_binary, source_hashes

REPO = Path(__file__).resolve().parents[2]
ARTIFACT = REPO / "shardnet" / "chain" / "artifacts" / "ShardRegistry.json"


def copy_checkout(tmp_path: Path) -> Path:
    """A minimal checkout (contracts, artifacts, hardhat config) sharing this one's node_modules."""
    root = tmp_path / "repo"
    shutil.copytree(REPO / "contracts", root / "contracts")
    shutil.copytree(REPO / "shardnet" / "chain" / "artifacts", root / "shardnet" / "chain" / "artifacts")
    shutil.copy(REPO / "hardhat.config.js", root / "hardhat.config.js")
    (root / "node_modules").symlink_to(REPO / "node_modules")
    return root


@pytest.fixture(scope="module")
def compile_once() -> Iterator[None]:
    """solc's output is a function of its standard-JSON input, and the checkout and its copy (`copy_checkout`) give
    the same input (same source names and texts): the module's `--check` runs share one compilation (each is
    ~20 s with solcjs). Each run still builds its artifacts from that output and compares them with its own
    committed files."""
    real = solcx.compile_standard
    outputs: dict[str, Any] = {}

    def compile_standard(input_data: dict[str, Any], **kwargs: Any) -> Any:
        key = json.dumps(input_data, sort_keys=True)
        if key not in outputs:
            outputs[key] = real(input_data, **kwargs)
        return copy.deepcopy(outputs[key])

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(solcx, "compile_standard", compile_standard)
        yield


def test_committed_artifact_records_current_sources() -> None:
    assert artifact_is_stale() == [], "run `python -m shardnet.chain.compile` and commit the artifact"
    artifact = json.loads(ARTIFACT.read_text())
    assert artifact["sourceSha256"] == source_hashes()
    assert artifact["compiler"].startswith(SOLC_VERSION + "+commit.")
    assert artifact["settings"] == SETTINGS and artifact["settings"]["evmVersion"] == "cancun"
    assert artifact["contractName"] == "ShardRegistry"
    assert artifact["bytecode"].startswith("0x6") and len(artifact["deployedBytecode"]) > 10_000
    # runtime code must fit the EIP-170 limit of 24,576 bytes
    assert (len(artifact["deployedBytecode"]) - 2) // 2 <= 24_576
    assert ARTIFACT.read_text() == json.dumps(artifact, sort_keys=True, indent=2) + "\n"


def test_recompiling_gives_the_committed_artifact(compile_once: None) -> None:
    assert main(["--check"]) == 0, (
        "the committed artifact differs from a fresh compilation: recompile and commit"
    )


def test_stale_artifacts_are_detected(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, compile_once: None
) -> None:
    root = copy_checkout(tmp_path)
    art = root / "shardnet" / "chain" / "artifacts" / "ShardRegistry.json"
    data = json.loads(art.read_text())
    data["deployedBytecode"] = data["deployedBytecode"][:-2] + "00"  # same sources, different code
    art.write_text(json.dumps(data, sort_keys=True, indent=2) + "\n")
    assert artifact_is_stale(root) == []  # the hashes cannot see this ...
    with caplog.at_level(logging.ERROR):
        assert main(["--check", "--repo-root", str(root)]) == 1  # ... recompiling does
    assert "ShardRegistry" in caplog.text and "python -m shardnet.chain.compile" in caplog.text
    source = root / "contracts" / "ShardRegistry.sol"
    source.write_text(source.read_text() + "\n// edited\n")
    (root / "contracts" / "Extra.sol").write_text("// SPDX-License-Identifier: Apache-2.0\n")
    problems = artifact_is_stale(root)
    for name in ("ShardRegistry.json", "StorageRewards.json"):  # every artifact records every source
        assert [p for p in problems if p.startswith(name)] == [
            f"{name}: contracts/Extra.sol is not recorded (new source)",
            f"{name}: contracts/ShardRegistry.sol changed since it was compiled",
        ]


def test_solcjs_wrapper_speaks_like_solc(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "PATH",
        os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep) if not (Path(p) / "solc").exists()),
    )
    with solc_binary() as binary:
        version = subprocess.run(
            [str(binary), "--version"], capture_output=True, text=True, check=True
        ).stdout
        assert f"Version: {SOLC_VERSION}+commit." in version
        bad = subprocess.run([str(binary), "--bin", "x.sol"], capture_output=True, text=True)
        assert bad.returncode == 2 and "--standard-json" in bad.stderr
        folder = binary.parent
    assert not folder.exists()  # the generated wrapper is cleaned up


@pytest.mark.hardhat
def test_hardhat_compiles_offline_to_the_same_bytecode(tmp_path: Path) -> None:
    root = copy_checkout(tmp_path)
    run = subprocess.run(
        [
            "node",
            str(REPO / "node_modules" / "hardhat" / "internal" / "cli" / "bootstrap.js"),
            "compile",
            "--quiet",
        ],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "HARDHAT_DISABLE_TELEMETRY_PROMPT": "true"},
    )
    assert run.returncode == 0, run.stdout + run.stderr
    hh = json.loads(
        (root / "artifacts-hh" / "contracts" / "ShardRegistry.sol" / "ShardRegistry.json").read_text()
    )
    ours = json.loads(ARTIFACT.read_text())
    assert (hh["abi"], hh["bytecode"], hh["deployedBytecode"]) == (
        ours["abi"],
        ours["bytecode"],
        ours["deployedBytecode"],
    )
