"""One role process (`worker run` or `coordinator run`) started on this machine: launch it with its log
file and its key in an environment variable, wait until its /health answers, signal it, stop it.
The local-network launcher (`shardnet.localnet`), the tests and the benchmark build on it.

    proc = spawn_role("worker1", "worker.cli", key_hex, ["--model", "1"], port=8701, log_path=Path("w1.log"))
    proc.wait_healthy(90)
    proc.stop()          # SIGTERM (the role drains), then SIGKILL after `timeout`
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shardnet.errors import ShardnetError
from shardnet.http_json import HttpUnreachable, request_json

#: The checkout the role modules are imported from (the children run with it as their working folder).
REPO = Path(__file__).resolve().parents[1]

#: The environment variable a spawned role reads its hex private key from (`--key-env`).
KEY_VAR = "SHARDNET_LOCALNET_KEY"


class RoleProcessError(ShardnetError):
    """A role process exited or did not become healthy; the message carries the end of its log."""


@dataclass
class RoleProcess:
    """A spawned role with its log file; `url` is where its HTTP API answers."""

    name: str
    url: str
    popen: subprocess.Popen[bytes]
    log_path: Path

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def tail(self, n: int = 4000) -> str:
        return self.log()[-n:]

    def wait_healthy(self, timeout: float) -> dict[str, Any]:
        """Wait until GET /health answers 200; returns its JSON. Raises RoleProcessError if it exits first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise RoleProcessError(
                    f"{self.name} exited with code {self.popen.returncode} before serving; its log:\n{self.tail()}"
                )
            try:
                status, body = request_json("GET", self.url + "/health", timeout=2)
            except HttpUnreachable:
                status, body = 0, None
            if status == 200:
                return dict(body or {})
            time.sleep(0.2)
        raise RoleProcessError(f"{self.name} did not serve within {timeout:.0f} s; its log:\n{self.tail()}")

    def send_signal(self, sig: int) -> None:
        self.popen.send_signal(sig)

    def wait(self, timeout: float = 60.0) -> int:
        return self.popen.wait(timeout=timeout)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)
        self.wait(timeout=10)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> None:
        """Make sure the process is gone: `sig` (SIGTERM: drain and stop), then SIGKILL after `timeout` s."""
        if not self.alive():
            return
        self.popen.send_signal(sig)
        try:
            self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(timeout=10)


def spawn_role(
    name: str,
    module: str,
    key_hex: str,
    args: Sequence[str],
    *,
    port: int,
    log_path: Path,
    host: str = "127.0.0.1",
    key_var: str = KEY_VAR,
    threads: int = 1,
    env: Mapping[str, str] | None = None,
    new_session: bool = False,
    command_prefix: Sequence[str] = (),
    public_url: str | None = None,
) -> RoleProcess:
    """Start `python -m <module> run --key-env <key_var> --host HOST --port PORT <args>`, output to `log_path`.

    `new_session` detaches the child from the terminal's process group (a Ctrl-C then reaches only the
    launcher, which stops the children in order). `command_prefix` runs it through another program (the
    namespace test network: `ip netns exec NS`), and `public_url` is then where this process reaches its
    API (default: http://HOST:PORT).
    """
    child_env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "OMP_NUM_THREADS": str(threads),
        "PYTHONUNBUFFERED": "1",
        key_var: key_hex,
        **(env or {}),
    }
    cmd = [
        *command_prefix,
        sys.executable,
        "-m",
        module,
        "run",
        "--key-env",
        key_var,
        "--host",
        host,
        "--port",
        str(port),
        *args,
    ]
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        popen = subprocess.Popen(
            cmd,
            cwd=REPO,
            env=child_env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=new_session,
        )
    return RoleProcess(name, public_url or f"http://{host}:{port}", popen, log_path)
