"""One role process (`worker run` or `coordinator run`) started by an integration test on 127.0.0.1, through
the same launcher as `shardnet localnet` (`shardnet.role_process`): launch with its log file, wait until its
/health answers, signal it, stop it. The worker and coordinator harnesses build on this; each says only
its command line."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path
from signal import SIGTERM  # in the class body `signal` is the method below
from typing import Any, ClassVar

from shardnet.role_process import REPO, RoleProcess, spawn_role

__all__ = ["REPO", "ServiceProc"]


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

    def _process(self) -> RoleProcess:
        assert self.proc is not None, f"start the {self.role} first"
        return RoleProcess(self.role, self.url, self.proc, self.log_path)

    def start(self) -> Any:
        launched = spawn_role(
            self.role,
            self.module,
            self.key_hex(),
            [*self.extra_args(), *self.args],
            port=self.port,
            log_path=self.log_path,
            key_var=self.key_var,
            env=self.env,
        )
        self.proc = launched.popen
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_ready(self, timeout: float | None = None) -> dict[str, Any]:
        return self._process().wait_healthy(self.ready_timeout if timeout is None else timeout)

    def signal(self, sig: int) -> None:
        self._process().send_signal(sig)

    def wait(self, timeout: float = 60.0) -> int:
        return self._process().wait(timeout)

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        self.wait(timeout=10)

    def stop(self, timeout: float = 30.0) -> None:
        """Make sure the process is gone (SIGTERM, then SIGKILL after `timeout` s)."""
        if self.proc is not None:
            self._process().stop(timeout=timeout)

    def stop_timed(self, marker: str, sig: int = SIGTERM, timeout: float = 60.0) -> tuple[float, float]:
        """Send `sig` and wait for the exit; returns the seconds from the signal until `marker` appeared in the
        log (polled every 10 ms; the exit's time when the line came with it) and until the process exited."""
        process = self._process()
        start = len(process.log())
        sent = time.monotonic()
        process.send_signal(sig)
        said: float | None = None
        while process.popen.poll() is None:
            if said is None and marker in process.log()[start:]:
                said = time.monotonic() - sent
            assert time.monotonic() - sent < timeout, f"{self.role} still running {timeout:.0f} s after {sig}"
            time.sleep(0.01)
        exited = time.monotonic() - sent
        assert marker in process.log()[start:], f"{self.role} exited without logging {marker!r}"
        return (exited if said is None else said), exited
