"""Devnet processes, deployment files and the chain CLI, with real anvil / hardhat processes."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from eth_account.signers.local import LocalAccount

from shardnet.chain.deploy import deploy_registry, deployment_path, load_deployment
from shardnet.chain.devnet import DEV_CHAIN_ID, DEV_KEYS, DEV_MNEMONIC, Devnet, DevnetError, find_node_modules
from shardnet.chain.errors import ChainError, ChainUnavailable
from shardnet.chain.registry import Registry, RegistryParams

REPO = Path(__file__).resolve().parents[2]
_CLI = "import sys; from shardnet.cli import main; sys.exit(main(sys.argv[1:]))"


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _processes_mentioning(text: str) -> list[int]:
    """Pids whose command line contains `text` (read-only scan of /proc, to find orphans)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if text in cmdline:
                found.append(int(entry.name))
    return found


def test_anvil_starts_answers_and_stops_without_orphans(accounts: list[LocalAccount]) -> None:
    with Devnet.start("anvil") as net:
        w3 = net.web3()
        assert w3.eth.chain_id == DEV_CHAIN_ID
        assert w3.eth.get_balance(accounts[9].address) == 10_000 * 10**18
        assert accounts[0].address == "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"
        pgid = os.getpgid(net.process.pid)
        assert pgid != os.getpgid(0), "the node must run in its own process group"
        port = net.port
    assert net.process.poll() is not None
    assert not _port_open(port)
    assert _processes_mentioning(f"--port {port}") == []


@pytest.mark.hardhat
def test_anvil_keeps_its_evicted_states_in_its_own_folder_removed_at_stop() -> None:
    """anvil's default (~/.foundry/anvil/tmp) kept every killed node's states: 72 GB on one machine."""
    net = Devnet.start("anvil")
    try:
        cache = net.cache_dir
        assert cache is not None and cache.is_dir()
        with open(f"/proc/{net.process.pid}/cmdline", "rb") as f:
            args = f.read().split(b"\0")
        assert args[args.index(b"--cache-path") + 1] == str(cache).encode()
    finally:
        net.stop()
    assert not cache.exists()


def test_hardhat_node_stops_with_its_whole_process_group() -> None:
    net = Devnet.start("hardhat")
    try:
        assert net.web3().eth.chain_id == DEV_CHAIN_ID
    finally:
        net.stop()
    assert not _port_open(net.port)
    assert _processes_mentioning(f"--port {net.port}") == []


def test_state_file_keeps_the_chain_across_restarts(accounts: list[LocalAccount], tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    with Devnet.start(state_file=state) as net:
        dep = deploy_registry(net.web3(), accounts[0])
        Registry(net.web3(), dep.registry, accounts[0]).register_model("kept", "bafk", 2, 1)
        port = net.port
    assert state.stat().st_size > 0
    with Devnet.start(port=port, state_file=state) as net:
        registry = Registry(net.web3(), dep.registry)
        assert registry.get_model(1).name == "kept"
        assert registry.block_number() >= dep.deploy_block + 1


def test_a_taken_port_is_refused_not_shared(anvil) -> None:
    with pytest.raises(DevnetError, match="already in use"):
        Devnet.start("anvil", port=anvil.devnet.port)
    assert anvil.devnet.is_running() and anvil.block_number() >= 0


def test_missing_node_modules_says_to_run_npm_install(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("SHARDNET_NODE_MODULES", str(tmp_path / "nowhere"))
    with pytest.raises(DevnetError, match="npm install"):
        find_node_modules()
    with pytest.raises(DevnetError, match="npm install"):
        Devnet.start("anvil")


def test_dev_keys_are_the_default_mnemonic_accounts(anvil) -> None:
    from eth_account import Account

    Account.enable_unaudited_hdwallet_features()
    derived = [
        Account.from_mnemonic(DEV_MNEMONIC, account_path=f"m/44'/60'/0'/0/{i}").key.hex().removeprefix("0x")
        for i in range(10)
    ]
    assert [k.removeprefix("0x") for k in DEV_KEYS] == derived
    funded = [a.lower() for a in anvil.w3.eth.accounts]
    assert [Account.from_key(k).address.lower() for k in DEV_KEYS] == funded


def test_deployment_file_round_trip(
    anvil, accounts: list[LocalAccount], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    params = RegistryParams(
        min_stake=5,
        unbonding_period=1,
        job_timeout=2,
        coordinator_fee_bps=3,
        slash_bps=4,
        max_prompt_tokens=6,
        max_job_tokens=7,
    )
    dep = deploy_registry(anvil.w3, accounts[0], params)
    path = dep.save(tmp_path / "sub" / "dep.json")
    assert load_deployment(path) == dep
    monkeypatch.setenv("SHARDNET_DEPLOYMENT", str(path))
    assert deployment_path(None) == path
    registry = Registry.from_deployment()
    assert registry.params() == params and registry.deploy_block == dep.deploy_block
    with pytest.raises(ChainError, match="shardnet devnet"):
        load_deployment(tmp_path / "missing.json")


def test_unreachable_node_is_a_clear_error(tmp_path: Path) -> None:
    from web3 import HTTPProvider, Web3

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    registry = Registry(Web3(HTTPProvider(f"http://127.0.0.1:{port}")), "0x" + "11" * 20)
    with pytest.raises(ChainUnavailable, match="is it running"):
        registry.model_count()


def _shardnet(*args: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", _CLI, *args], cwd=REPO, capture_output=True, text=True, timeout=60, **kwargs
    )


def test_devnet_cli_deploys_approves_and_stops_cleanly(accounts: list[LocalAccount], tmp_path: Path) -> None:
    dep_file = tmp_path / "deployment.json"
    coordinator = accounts[7].address
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            _CLI,
            "devnet",
            "--port",
            "0",
            "--deployment",
            str(dep_file),
            "--coordinator",
            f"{coordinator}=http://127.0.0.1:9999",
            "--job-timeout",
            "30",
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        assert proc.stdout is not None
        lines = []
        while not any("Ctrl-C" in line for line in lines):
            assert time.monotonic() < deadline and proc.poll() is None, "".join(lines)
            lines.append(proc.stdout.readline())
        dep = load_deployment(dep_file)
        registry = Registry.from_deployment(dep_file)
        assert registry.is_coordinator(coordinator)
        assert registry.coordinator_endpoint(coordinator) == "http://127.0.0.1:9999"
        assert registry.job_timeout() == 30
        assert any(DEV_KEYS[3] in line for line in lines)

        status = _shardnet("chain", "status", "--deployment", str(dep_file))
        assert status.returncode == 0, status.stderr
        assert (
            coordinator in status.stdout
            and "models (0)" in status.stdout
            and "job timeout 30 s" in status.stdout
        )
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(20)
    assert code == 0
    port = int(dep.rpc_url.rsplit(":", 1)[1])
    assert not _port_open(port)
    assert _processes_mentioning(f"--port {port}") == []


def test_deploy_cli_with_a_key_from_the_environment(anvil, tmp_path: Path) -> None:
    dep_file = tmp_path / "d.json"
    env = dict(os.environ, DEPLOYER_KEY=DEV_KEYS[4])
    done = _shardnet(
        "deploy",
        "--rpc",
        anvil.rpc_url,
        "--key-env",
        "DEPLOYER_KEY",
        "--deployment",
        str(dep_file),
        "--min-stake",
        "0.5",
        env=env,
    )
    assert done.returncode == 0, done.stderr
    dep = load_deployment(dep_file)
    from eth_account import Account

    assert dep.owner == Account.from_key(DEV_KEYS[4]).address
    assert Registry(anvil.w3, dep.registry).min_stake() == 5 * 10**17

    bad = _shardnet(
        "deploy", "--rpc", anvil.rpc_url, "--key-env", "NO_SUCH_VAR_X", "--deployment", str(dep_file)
    )
    assert bad.returncode == 1 and "NO_SUCH_VAR_X" in bad.stderr


def _start_devnet_cli(dep_file: Path, *extra: str) -> tuple[subprocess.Popen[str], list[str]]:
    proc = subprocess.Popen(
        [sys.executable, "-c", _CLI, "devnet", "--port", "0", "--deployment", str(dep_file), *extra],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + 60
    assert proc.stdout is not None
    lines: list[str] = []
    while not any("Ctrl-C" in line for line in lines):
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            raise AssertionError("devnet did not come up:\n" + "".join(lines))
        lines.append(proc.stdout.readline())
    return proc, lines


def _wait_gone(text: str, timeout: float = 10.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while (left := _processes_mentioning(text)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


@pytest.mark.parametrize("node", ["anvil", pytest.param("hardhat", marks=pytest.mark.hardhat)])
def test_devnet_cli_killed_with_sigkill_leaves_no_orphan_node(node: str, tmp_path: Path) -> None:
    dep_file = tmp_path / "deployment.json"
    proc, _ = _start_devnet_cli(dep_file, "--node", node)
    port = int(load_deployment(dep_file).rpc_url.rsplit(":", 1)[1])
    nodes = _processes_mentioning(f"--port {port}")
    assert nodes, f"no {node} process found on port {port}"
    proc.kill()  # SIGKILL: no finally block, no signal handler runs in the CLI
    proc.wait(10)
    left = _wait_gone(f"--port {port}")
    for pid in left:  # clean up before failing, so a regression leaves nothing running
        os.kill(pid, signal.SIGKILL)
    assert left == [], f"{node} outlived the SIGKILLed `shardnet devnet` (pids {left})"
    deadline = time.monotonic() + 10  # a dying process closes its sockets just after its command line goes
    while _port_open(port) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _port_open(port)
