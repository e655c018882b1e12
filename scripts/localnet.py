"""A whole shardnet on one machine: an anvil devnet, the registry, a model store, workers and a coordinator
as separate processes talking HTTP on 127.0.0.1. The main job (scripts/demo.py) and the benchmark
(scripts/bench.py network) build on it; everything it starts is stopped by `close()` (or the `with` block).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from eth_account import Account  # noqa: E402

from shardnet.chain.deploy import Deployment, deploy_registry  # noqa: E402
from shardnet.chain.devnet import DEV_KEYS, Devnet, free_port  # noqa: E402
from shardnet.chain.registry import Registry, RegistryParams  # noqa: E402
from shardnet.span import LayerSpan  # noqa: E402

# dev accounts by role (anvil's funded accounts)
OWNER, COORDINATOR, CLIENT = 0, 1, 2
FIRST_WORKER = 3


def http_json(method: str, url: str, body: Any = None, timeout: float = 5.0,
              headers: dict[str, str] | None = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, None


@dataclass
class Proc:
    """A child process of the network (a worker or the coordinator) with its log file."""

    name: str
    url: str
    popen: subprocess.Popen[bytes]
    log_path: Path

    def alive(self) -> bool:
        return self.popen.poll() is None

    def tail(self, n: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-n:] if self.log_path.exists() else ""

    def wait_healthy(self, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(f"{self.name} exited with code {self.popen.returncode}; its log:\n{self.tail()}")
            try:
                status, body = http_json("GET", self.url + "/health", timeout=2)
                if status == 200 and (body or {}).get("ready", True):
                    return dict(body or {})
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                pass
            time.sleep(0.25)
        raise RuntimeError(f"{self.name} did not become healthy within {timeout:.0f} s; its log:\n{self.tail()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> None:
        if not self.alive():
            return
        self.popen.send_signal(sig)
        try:
            self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(timeout=10)


@dataclass
class LocalNetwork:
    """Start with `LocalNetwork.start(work_dir)`, then `import_model`, `add_worker`, `start_coordinator`."""

    work_dir: Path
    devnet: Devnet
    deployment: Deployment
    deployment_file: Path
    owner: Registry
    procs: list[Proc] = field(default_factory=list)
    store_dir: Path | None = None

    @classmethod
    def start(cls, work_dir: Path, *, job_timeout_s: int = 600) -> LocalNetwork:
        work_dir.mkdir(parents=True, exist_ok=True)
        devnet = Devnet.start("anvil", log_file=work_dir / "anvil.log")
        try:
            w3 = devnet.web3()
            owner = Account.from_key(DEV_KEYS[OWNER])
            deployment = deploy_registry(w3, owner, RegistryParams(job_timeout=job_timeout_s), rpc_url=devnet.rpc_url)
            deployment_file = deployment.save(work_dir / "deployment.json")
            registry = Registry.from_deployment(deployment_file, account=owner)
        except BaseException:
            devnet.stop()
            raise
        return cls(work_dir, devnet, deployment, deployment_file, registry)

    def registry_for(self, index: int) -> Registry:
        return self.owner.with_account(Account.from_key(DEV_KEYS[index]))

    def address(self, index: int) -> str:
        return Account.from_key(DEV_KEYS[index]).address

    def import_model(self, source: str | Path, *, price_wei: int, name: str | None = None) -> tuple[int, str, Any]:
        """Import a checkpoint into the network's store and register it on chain; returns (model id, CID, manifest)."""
        from shardnet.model.importer import import_model

        self.store_dir = self.work_dir / "publisher-store"
        cid, manifest = import_model(source, self.store_dir, name=name)
        tx = self.owner.register_model(manifest.name, cid, manifest.num_layers, price_wei)
        return int(tx.event("ModelRegistered").args["modelId"]), cid, manifest

    def _spawn(self, name: str, module: str, key_index: int, args: list[str], port: int, threads: int) -> Proc:
        log_path = self.work_dir / f"{name}.log"
        env = {
            **os.environ,
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false",
            "OMP_NUM_THREADS": str(threads),
            "SHARDNET_LOCALNET_KEY": DEV_KEYS[key_index],
            "PYTHONUNBUFFERED": "1",
        }
        cmd = [sys.executable, "-m", module, "run", "--deployment", str(self.deployment_file),
               "--key-env", "SHARDNET_LOCALNET_KEY", "--host", "127.0.0.1", "--port", str(port), *args]
        with open(log_path, "ab") as log:
            popen = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        proc = Proc(name, f"http://127.0.0.1:{port}", popen, log_path)
        self.procs.append(proc)
        return proc

    def add_worker(self, index: int, model_id: int, span: LayerSpan, *, threads: int = 2,
                   extra: tuple[str, ...] = ()) -> Proc:
        """Start worker number `index` (0-based) serving `span`; it stakes, fetches its shard and announces it."""
        assert self.store_dir is not None, "import a model first"
        port = free_port()
        name = f"worker{index + 1}"
        args = ["--model", str(model_id), "--layers", str(span), "--public-url", f"http://127.0.0.1:{port}",
                "--data-dir", str(self.work_dir / name), "--store-dir", str(self.work_dir / name / "store"),
                "--peers", str(self.store_dir), "--threads", str(threads), *extra]
        return self._spawn(name, "worker.cli", FIRST_WORKER + index, args, port, threads)

    def start_coordinator(self, *, extra: tuple[str, ...] = ()) -> Proc:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        self.owner.set_coordinator(self.address(COORDINATOR), url, True)
        args = ["--data-dir", str(self.work_dir / "coordinator"), "--store-dir", str(self.work_dir / "coordinator" / "store"),
                *extra]
        return self._spawn("coordinator", "coordinator.cli", COORDINATOR, args, port, 1)

    def close(self) -> None:
        """Stop every process (workers drain and release their shards), then the devnet."""
        for proc in reversed(self.procs):
            try:
                proc.stop()
            except Exception:  # noqa: BLE001 - keep stopping the others
                proc.popen.kill()
        self.devnet.stop()

    def __enter__(self) -> LocalNetwork:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
