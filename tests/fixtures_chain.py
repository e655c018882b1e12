"""Chain fixtures: a real anvil devnet for the session, a deployed registry, funded dev accounts.

- `anvil`: one anvil node for the whole session (`DevChain`: rpc_url, w3, snapshot/revert, time travel).
- `accounts`: the 10 funded dev accounts (LocalAccount); `accounts[0]` deploys and owns the registry.
- `isolated_anvil`: the same node, inside an EVM snapshot reverted after the test (nonces resynced).
- `deployment`: a registry deployed once per test module; each test runs inside `isolated_anvil`, so
  tests are independent and fast.
- `registry_for(account)`: Registry bindings sending as `account`; `registry`: the owner's bindings.
- `hardhat`: a hardhat node with its own fresh registry, for tests marked `hardhat`.
- `postgres_url`: a throwaway PostgreSQL server for the session (skips when PostgreSQL is not installed),
  for tests marked `postgres` of the off-chain state (`shardnet.db.make_engine(url)`).
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from shardnet.chain.deploy import Deployment, deploy_registry
from shardnet.chain.devnet import DEV_KEYS, Devnet, NodeKind, free_port
from shardnet.chain.registry import Registry, RegistryParams
from shardnet.chain.tx import reset_nonce_managers, rpc

if TYPE_CHECKING:
    from eth_account.signers.local import LocalAccount
    from web3 import Web3

#: Registry parameters of the test deployments: the devnet defaults, without the verification share (the settlement
#: tests check every job's refund to the wei as escrow - pay - fees); tests/chain/test_registry_verification.py and
#: tests/coordinator/test_verifier_pay.py deploy with it (VERIFY_PARAMS).
TEST_PARAMS = RegistryParams(verify_bps=0)
VERIFY_PARAMS = RegistryParams()


#: how far the test devnets' clocks were moved ahead of the wall clock (`DevChain.advance_time`; the session's
#: anvil is shared, so a later test's chain runs ahead by what earlier tests warped)
_CHAIN_AHEAD_S = 0


def ticket_expiry(ttl_s: int = 600) -> int:
    """An `expires_at` for test tickets valid for `ttl_s` by the wall clock (worker) AND by the chain's clock
    (the registry refuses a post of a ticket expired for longer than the dispute window)."""
    return int(time.time()) + _CHAIN_AHEAD_S + ttl_s


@dataclass
class DevChain:
    """A running devnet as tests see it."""

    devnet: Devnet
    w3: Web3

    @property
    def rpc_url(self) -> str:
        return self.devnet.rpc_url

    @property
    def kind(self) -> NodeKind:
        return self.devnet.kind

    def rpc(self, method: str, *params: Any) -> Any:
        return rpc(self.w3, method, list(params))

    def snapshot(self) -> str:
        return str(self.rpc("evm_snapshot"))

    def revert(self, snapshot_id: str) -> None:
        if not self.rpc("evm_revert", snapshot_id):
            raise RuntimeError(f"evm_revert({snapshot_id}) failed on {self.rpc_url}")
        reset_nonce_managers()

    def mine(self, blocks: int = 1) -> None:
        """Mine `blocks` empty blocks."""
        for _ in range(blocks):
            self.rpc("evm_mine")

    def advance_time(self, seconds: int) -> None:
        """Move the chain clock forward and mine a block with the new time."""
        global _CHAIN_AHEAD_S
        _CHAIN_AHEAD_S += int(seconds)
        self.rpc("evm_increaseTime", seconds)
        self.rpc("evm_mine")

    def block_number(self) -> int:
        return int(self.rpc("eth_blockNumber"), 16)

    def timestamp(self) -> int:
        return int(self.rpc("eth_getBlockByNumber", "latest", False)["timestamp"], 16)


@pytest.fixture(scope="session")
def accounts() -> list[LocalAccount]:
    """The 10 funded dev accounts (10,000 ether each on a fresh devnet); [0] owns the test registry."""
    from eth_account import Account

    return [Account.from_key(key) for key in DEV_KEYS]


@contextmanager
def _started_chain(kind: NodeKind, tmp_dir: Any) -> Iterator[DevChain]:
    devnet = Devnet.start(kind, log_file=tmp_dir / f"{kind}.log")
    try:
        yield DevChain(devnet, devnet.web3())
    finally:
        devnet.stop()
        reset_nonce_managers()


@pytest.fixture(scope="session")
def anvil(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevChain]:
    """One anvil devnet for the whole test session."""
    with _started_chain("anvil", tmp_path_factory.mktemp("anvil")) as chain:
        yield chain


@pytest.fixture(scope="module")
def module_deployment(anvil: DevChain, accounts: list[LocalAccount]) -> Deployment:
    """A registry deployed once for the test module (tests use `deployment`, which isolates each test)."""
    return deploy_registry(anvil.w3, accounts[0], TEST_PARAMS)


@pytest.fixture
def isolated_anvil(anvil: DevChain) -> Iterator[DevChain]:
    """The session's anvil inside an EVM snapshot that is reverted after the test."""
    snapshot = anvil.snapshot()
    try:
        yield anvil
    finally:
        anvil.revert(snapshot)


@pytest.fixture
def deployment(module_deployment: Deployment, isolated_anvil: DevChain) -> Deployment:
    """The module's registry; the test runs inside an EVM snapshot reverted afterwards."""
    return module_deployment


@pytest.fixture
def registry_for(anvil: DevChain, deployment: Deployment) -> Callable[[LocalAccount | None], Registry]:
    """`registry_for(account)`: bindings of the test registry that send as `account` (None: views only)."""

    def make(account: LocalAccount | None = None) -> Registry:
        return Registry(anvil.w3, deployment.registry, account, deploy_block=deployment.deploy_block)

    return make


@pytest.fixture
def registry(
    registry_for: Callable[[LocalAccount | None], Registry], accounts: list[LocalAccount]
) -> Registry:
    """The owner's (accounts[0]) bindings of the test registry."""
    return registry_for(accounts[0])


@dataclass
class HardhatChain(DevChain):
    deployment: Deployment | None = None

    def registry_for(self, account: LocalAccount | None = None) -> Registry:
        assert self.deployment is not None
        return Registry(self.w3, self.deployment.registry, account, deploy_block=self.deployment.deploy_block)


@pytest.fixture(scope="module")
def hardhat(tmp_path_factory: pytest.TempPathFactory, accounts: list[LocalAccount]) -> Iterator[HardhatChain]:
    """A hardhat node (`npx hardhat node`) with a freshly deployed registry; use it in tests marked `hardhat`."""
    with _started_chain("hardhat", tmp_path_factory.mktemp("hardhat")) as chain:
        hh = HardhatChain(chain.devnet, chain.w3)
        hh.deployment = deploy_registry(hh.w3, accounts[0], TEST_PARAMS)
        yield hh


def _postgres_bindir() -> Path | None:
    found = shutil.which("initdb") or next(iter(sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))), None)
    return Path(found).resolve().parent if found else None


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """URL of a PostgreSQL server started for this session in a temporary folder (trust auth on 127.0.0.1)."""
    bindir = _postgres_bindir()
    if bindir is None:
        pytest.skip("PostgreSQL is not installed (no initdb): apt-get install postgresql to run this test")
    # PostgreSQL refuses to run as root: run it as the `postgres` user then.
    as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    base = Path(tempfile.mkdtemp(prefix="shardnet-pg-"))
    if as_user:
        shutil.chown(base, "postgres")
    data, port = base / "data", free_port()

    def run(*cmd: str) -> None:
        done = subprocess.run([*as_user, *cmd], capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed: {done.stdout}{done.stderr}")

    try:
        run(
            str(bindir / "initdb"),
            "-D",
            str(data),
            "-U",
            "shardnet",
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-sync",
        )
        run(
            str(bindir / "pg_ctl"),
            "-D",
            str(data),
            "-l",
            str(base / "server.log"),
            "-w",
            "-t",
            "60",
            "-o",
            f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c fsync=off",
            "start",
        )
        try:
            yield f"postgresql+psycopg2://shardnet@127.0.0.1:{port}/postgres"
        finally:
            run(str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop")
    finally:
        shutil.rmtree(base, ignore_errors=True)
