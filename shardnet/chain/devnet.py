"""Local development chains: the anvil binary or a hardhat node, started from the pinned node_modules.

A `Devnet` runs the node on 127.0.0.1 and a free port, in its own process group, waits until JSON-RPC
answers and stops it cleanly (SIGTERM, then SIGKILL of the whole group): no orphan survives it. On Linux
the node also gets SIGTERM from the kernel when the Python process that started it dies without
stopping it (SIGKILL, a crash): `PR_SET_PDEATHSIG`, set when the devnet is started from the main thread
(the signal follows the death of the starting *thread*, so a worker thread's devnet cannot use it).

    with Devnet.start() as net:
        w3 = net.web3()
"""

from __future__ import annotations

import ctypes
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from shardnet.chain.errors import ChainError
from shardnet.http_json import request_json

if TYPE_CHECKING:
    from web3 import Web3

log = logging.getLogger(__name__)

NodeKind = Literal["anvil", "hardhat"]
NODE_KINDS: tuple[str, ...] = ("anvil", "hardhat")

DEV_CHAIN_ID = 31337
#: The mnemonic that anvil and hardhat both fund by default (10 accounts of 10,000 ether).
DEV_MNEMONIC = "test test test test test test test test test test test junk"
#: The first 10 private keys of DEV_MNEMONIC (m/44'/60'/0'/0/i). Public knowledge: never use them on a real chain.
DEV_KEYS: tuple[str, ...] = (
    "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80",
    "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d",
    "0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a",
    "0x7c852118294e51e653712a81e05800f419141751be58f605c371e15141b007a6",
    "0x47e179ec197488593b187f80a00eb0da91f1b9d0b13f8733639f19c30a34926a",
    "0x8b3a350cf5c34c9194ca85829a2df0ec3153be0318b5e2d3348e872092edffba",
    "0x92db14e403b83dfe3df233f83dfa3a0d7096f21ca9b0d6d6b8d88b2b4ec1564e",
    "0x4bbbf85ce3377467afe5d46f804f221813b2bb87f24d81f60f1fcdbf7cbf4356",
    "0xdbda1821b80551c9d65939329250298aa3472ba22feea921c0cf5d620ea67b97",
    "0x2a871d0798f97d79848a013d4936a73bf4cc922c825d33c1cf7073dff6d409c6",
)

_ANVIL_RELATIVE = Path("@foundry-rs/anvil-linux-amd64/bin/anvil")
_HARDHAT_RELATIVE = Path(".bin/hardhat")
_REPO_ROOT = Path(__file__).resolve().parents[2]


class DevnetError(ChainError):
    """A local development chain could not be started or did not answer."""


def find_node_modules() -> Path:
    """The node_modules folder with the pinned JS tools: `SHARDNET_NODE_MODULES`, else the repository's own."""
    env = os.environ.get("SHARDNET_NODE_MODULES")
    candidates = [Path(env)] if env else [_REPO_ROOT / "node_modules", Path.cwd() / "node_modules"]
    for path in candidates:
        if path.is_dir():
            return path.resolve()
    where = env or f"{_REPO_ROOT / 'node_modules'} or ./node_modules"
    raise DevnetError(
        f"node_modules not found at {where}: run `bash scripts/setup.sh` (or `npm install`) in the shardnet repository "
        "(or set SHARDNET_NODE_MODULES to a folder that has @foundry-rs/anvil and hardhat installed)"
    )


def node_binary(kind: NodeKind) -> Path:
    """Path of the executable that runs a devnet of this kind."""
    if kind not in NODE_KINDS:
        raise DevnetError(f"unknown devnet node {kind!r}: choose one of {', '.join(NODE_KINDS)}")
    modules = find_node_modules()
    path = modules / (_ANVIL_RELATIVE if kind == "anvil" else _HARDHAT_RELATIVE)
    if not path.exists():
        raise DevnetError(
            f"{kind} is not installed at {path}: run `bash scripts/setup.sh` (or `npm install`) "
            "in the shardnet repository"
        )
    return path


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free right now on `host`."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def rpc_request(url: str, method: str, params: list[object] | None = None, timeout: float = 2.0) -> object:
    """One raw JSON-RPC request; returns `result` or raises DevnetError with the node's error (HttpUnreachable
    when the node does not answer)."""
    status, reply = request_json(
        "POST", url, {"jsonrpc": "2.0", "id": 1, "method": method, "params": params or []}, timeout=timeout
    )
    if status != 200 or not isinstance(reply, dict):
        raise DevnetError(f"{method} failed on {url}: HTTP {status}, {reply!r}")
    if "error" in reply:
        raise DevnetError(f"{method} failed on {url}: {reply['error']}")
    return reply.get("result")


_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> Callable[[], None] | None:
    """A `preexec_fn` that makes the child get SIGTERM when this process dies, or None where unsupported.

    Only on Linux and from the main thread: the kernel sends the signal when the thread that forked the
    child exits, so a devnet started from a short-lived thread would be stopped with that thread.
    """
    if not sys.platform.startswith("linux") or threading.current_thread() is not threading.main_thread():
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def preexec() -> None:  # runs in the child between fork and exec: keep it to two system calls
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)

    return preexec


def _hardhat_config() -> Path:
    """The repository's hardhat.config.js, or a minimal offline one (a hardhat node needs a config file)."""
    repo_config = _REPO_ROOT / "hardhat.config.js"
    if repo_config.exists():
        return repo_config
    fallback = _REPO_ROOT / ".shardnet" / "hardhat-node.config.js"
    fallback.parent.mkdir(parents=True, exist_ok=True)
    fallback.write_text("module.exports = { networks: { hardhat: { chainId: 31337 } } };\n")
    return fallback


@dataclass
class Devnet:
    """A running local chain. Use `Devnet.start(...)`; stop it with `stop()` or a `with` block."""

    kind: NodeKind
    host: str
    port: int
    process: subprocess.Popen[bytes]
    state_file: Path | None = None
    log_file: Path | None = None
    cache_dir: Path | None = None  # anvil's --cache-path (its persisted states), removed at stop
    _stopped: bool = field(default=False, repr=False)

    @property
    def rpc_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @classmethod
    def start(
        cls,
        kind: NodeKind = "anvil",
        *,
        port: int | None = None,
        host: str = "127.0.0.1",
        state_file: str | Path | None = None,
        log_file: str | Path | None = None,
        startup_timeout: float = 60.0,
    ) -> Devnet:
        """Start a node and wait until it answers JSON-RPC.

        `state_file` (anvil only) loads the chain from that file if it exists and writes it back on
        stop (and every few seconds), so a restarted node keeps its blocks, accounts and contracts.
        """
        binary = node_binary(kind)
        if state_file is not None and kind != "anvil":
            raise DevnetError("--state is supported with the anvil node only; drop it or use --node anvil")
        state = Path(state_file).resolve() if state_file is not None else None
        if state is not None:
            state.parent.mkdir(parents=True, exist_ok=True)
        attempts = 1 if port else 3  # a free port can be taken by someone else before the node binds it
        for attempt in range(1, attempts + 1):
            chosen = port or free_port(host)
            if _port_in_use(host, chosen):
                if port:
                    raise DevnetError(
                        f"port {port} on {host} is already in use: stop what runs there or pick another --port"
                    )
                continue
            net = cls._launch(kind, binary, host, chosen, state, Path(log_file) if log_file else None)
            try:
                net.wait_ready(startup_timeout)
            except DevnetError:
                exited = net.process.poll() is not None
                net.stop()
                if attempt == attempts or not exited:
                    raise
                log.warning("%s exited on port %d (taken meanwhile?); trying another port", kind, chosen)
                continue
            except BaseException:
                net.stop()
                raise
            log.info("%s devnet answering at %s (pid %d)", kind, net.rpc_url, net.process.pid)
            return net
        raise DevnetError(f"found no free port for {kind} on {host} after {attempts} tries: pass --port")

    @classmethod
    def _launch(
        cls, kind: NodeKind, binary: Path, host: str, port: int, state: Path | None, log_file: Path | None
    ) -> Devnet:
        cache: Path | None = None
        if kind == "anvil":
            # anvil writes the states it evicts from memory under ~/.foundry/anvil/tmp and leaves them there when
            # it is killed: 3-4 GB per long test run, 72 GB found on a development machine. Each node gets its own
            # folder, removed at stop.
            cache = Path(tempfile.mkdtemp(prefix="shardnet-anvil-cache-"))
            cmd = [str(binary), "--host", host, "--port", str(port), "--chain-id", str(DEV_CHAIN_ID)]
            cmd += ["--cache-path", str(cache)]
            if state is not None:
                cmd += ["--state", str(state), "--state-interval", "1", "--preserve-historical-states"]
            cwd = _REPO_ROOT
        else:
            config = _hardhat_config()
            cmd = [str(binary), "--config", str(config), "node", "--hostname", host, "--port", str(port)]
            cwd = _REPO_ROOT
        env = dict(os.environ, HARDHAT_DISABLE_TELEMETRY_PROMPT="true", DO_NOT_TRACK="1")
        log.debug("starting %s: %s", kind, " ".join(cmd))
        try:
            with open(log_file or os.devnull, "ab") as out:
                process = subprocess.Popen(
                    cmd,
                    cwd=cwd,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,
                    env=env,
                    preexec_fn=_die_with_parent(),
                )
        except BaseException:
            if cache is not None:
                shutil.rmtree(cache, ignore_errors=True)
            raise
        return cls(kind, host, port, process, state, log_file, cache)

    def wait_ready(self, timeout: float) -> None:
        """Wait until the node answers `eth_chainId`; raise DevnetError if it exits or times out."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            code = self.process.poll()
            if code is not None:
                hint = f" (its output is in {self.log_file})" if self.log_file else ""
                raise DevnetError(
                    f"{self.kind} exited with code {code} before answering on {self.rpc_url}{hint}: "
                    "is the port already in use? try another --port"
                )
            try:
                rpc_request(self.rpc_url, "eth_chainId", timeout=1.0)
            except (OSError, ValueError, DevnetError):
                time.sleep(0.05)
                continue
            time.sleep(0.05)  # an answer from another node on this port while ours fails to bind: see it exit
            if self.process.poll() is None:
                return
        raise DevnetError(f"{self.kind} did not answer JSON-RPC on {self.rpc_url} within {timeout:.0f} s")

    def web3(self, timeout: float = 30.0) -> Web3:
        """A Web3 client connected to this node."""
        from web3 import HTTPProvider, Web3

        return Web3(HTTPProvider(self.rpc_url, request_kwargs={"timeout": timeout}))

    def is_running(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the node and everything it started: SIGTERM to its process group, then SIGKILL."""
        if self._stopped:
            return
        self._stopped = True
        try:
            pgid = os.getpgid(self.process.pid)
        except ProcessLookupError:
            pgid = None
        if self.process.poll() is None and pgid is not None:
            os.killpg(pgid, signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                log.warning(
                    "%s (pid %d) ignored SIGTERM for %.0f s; killing it", self.kind, self.process.pid, timeout
                )
        if pgid is not None:
            try:  # children that outlived the leader (hardhat's node workers) go too
                os.killpg(pgid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        self.process.wait()
        if self.cache_dir is not None:
            shutil.rmtree(self.cache_dir, ignore_errors=True)
        log.info("%s devnet at %s stopped", self.kind, self.rpc_url)

    def __enter__(self) -> Devnet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
