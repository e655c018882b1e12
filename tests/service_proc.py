"""One role process (`worker run` or `coordinator run`) started by an integration test on 127.0.0.1: launch
with its log file, wait until its /health answers, signal it, stop it. The worker and coordinator
harnesses build on this; each says only its command line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, ClassVar

REPO = Path(__file__).resolve().parents[1]


class ServiceProc:
    """Mixin for a dataclass with `args`, `log_path`, `port`, `proc` and `env` fields."""

    role: ClassVar[str]
    module: ClassVar[str]
    key_var: ClassVar[str]
    ready_timeout: ClassVar[float] = 60.0
    args: list[str]
    log_path: Path
    port: int
    proc: subprocess.Popen[bytes] | None
    env: dict[str, str]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def key_hex(self) -> str:
        raise NotImplementedError

    def extra_args(self) -> list[str]:
        return []

    def start(self) -> Any:
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1",
               self.key_var: self.key_hex(), **self.env}
        cmd = [sys.executable, "-m", self.module, "run", "--key-env", self.key_var, "--host", "127.0.0.1",
               "--port", str(self.port), *self.extra_args(), *self.args]
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_ready(self, timeout: float | None = None) -> dict[str, Any]:
        assert self.proc is not None
        timeout = self.ready_timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.role} exited with {self.proc.returncode} before serving:\n{self.log()[-4000:]}")
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=2) as resp:
                    return dict(json.loads(resp.read()))
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.2)
        raise RuntimeError(f"{self.role} did not serve within {timeout} s:\n{self.log()[-4000:]}")

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def wait(self, timeout: float = 60.0) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout=timeout)

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        self.wait(timeout=10)

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
