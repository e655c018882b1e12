"""Helpers for the worker's integration tests: real `worker run` processes on 127.0.0.1 against real anvil."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from shardnet.chain.devnet import free_port
from shardnet.span import LayerSpan
from shardnet.wire.tickets import sign_ticket

if TYPE_CHECKING:
    from eth_account.signers.local import LocalAccount

    from shardnet.chain.registry import Registry

REPO = Path(__file__).resolve().parents[2]
T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def ticket(
    coordinator: LocalAccount, worker: str, span: LayerSpan, job_id: int = 0, session_id: str | None = None
) -> dict[str, Any]:
    return sign_ticket(
        coordinator,
        worker=worker,
        session_id=session_id or uuid.uuid4().hex,
        job_id=job_id,
        span=span,
        expires_at=int(time.time()) + 600,
    )


@dataclass
class WorkerProc:
    """One `python -m worker.cli run` subprocess."""

    account: LocalAccount
    args: list[str]
    log_path: Path
    port: int
    proc: subprocess.Popen[bytes] | None = None
    env: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def address(self) -> str:
        return str(self.account.address)

    def start(self) -> WorkerProc:
        env = {
            **os.environ,
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "WORKER_TEST_KEY": self.account.key.hex(),
            "OMP_NUM_THREADS": "1",
            **self.env,
        }
        cmd = [
            sys.executable,
            "-m",
            "worker.cli",
            "run",
            "--key-env",
            "WORKER_TEST_KEY",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--threads",
            "1",
            *self.args,
        ]
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_ready(self, timeout: float = 90.0) -> dict[str, Any]:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"worker exited with {self.proc.returncode} before serving:\n{self.log()[-4000:]}"
                )
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=2) as resp:
                    return dict(json.loads(resp.read()))
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.2)
        raise RuntimeError(f"worker did not serve within {timeout} s:\n{self.log()[-4000:]}")

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def wait(self, timeout: float = 60.0) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout=timeout)

    def stop(self) -> None:
        """Make sure the process is gone (SIGTERM, then SIGKILL)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)


def start_worker(
    tmp: Path,
    account: LocalAccount,
    deployment_file: Path,
    model: str,
    store_dir: Path,
    *extra: str,
    name: str | None = None,
    port: int | None = None,
) -> WorkerProc:
    name = name or account.address[:10]
    return WorkerProc(
        account=account,
        args=[
            "--deployment",
            str(deployment_file),
            "--model",
            model,
            "--store-dir",
            str(store_dir),
            "--data-dir",
            str(tmp / name),
            "--poll-interval-s",
            "0.2",
            *extra,
        ],
        log_path=tmp / f"{name}.log",
        port=port or free_port(),
    ).start()


def submit_and_route(
    client: Registry, coordinator: Registry, model_id: int, hops: list[tuple[str, LayerSpan]]
) -> int:
    """A paid job routed over `hops`; returns its id."""
    quote = client.quote(model_id, 8)
    job_id = int(
        client.submit_job(model_id, b"\x11" * 32, 8, value=quote).event("JobSubmitted").args["jobId"]
    )
    coordinator.assign_route(job_id, hops)
    return job_id
