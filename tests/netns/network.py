"""A whole shardnet on the namespace test network: anvil, each worker and the coordinator each on a host of its own
(`tests.netns.netlab`), behind a delaying proxy on its link (`tests.netns.delay_proxy`). This process (the root
namespace) is the client: it deploys, registers the model and talks to the coordinator over the bridge.

Each service listens on its namespace's loopback, port 8000 (anvil 8545); the proxy listens on the host's
address with the same port and forwards there, holding every chunk `delay_s` in each direction. So every
message between two hosts crosses one link and pays that link's delay once (the destination's: a request pays
the server's delay on the way in, and its answer on the way out).

    with NetLab.create() as lab, NamespaceNetwork.start(work_dir, lab) as net:
        model_id, cid, manifest = net.import_model(hf_dir, price_wei=10**6, name="tiny-chat")
        coordinator = net.start_coordinator(delay_s=0.005)
        worker = net.add_worker("a", 3, model_id, LayerSpan(0, 2), delay_s=0.005)
"""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shardnet.chain.deploy import Deployment, deploy_registry
from shardnet.chain.devnet import DEV_CHAIN_ID, DEV_KEYS, DevnetError, node_binary, rpc_request
from shardnet.chain.registry import Registry, RegistryParams
from shardnet.localnet import COORDINATOR, OWNER, dev_account, worker_args
from shardnet.role_process import REPO, RoleProcess, spawn_role
from shardnet.span import LayerSpan
from tests.netns.netlab import Host, NetLab

SERVICE_PORT = 8000
CHAIN_PORT = 8545


@dataclass
class NamespaceNetwork:
    """Start with `NamespaceNetwork.start(work_dir, lab)`, then `import_model`, `add_worker`, `start_coordinator`."""

    work_dir: Path
    lab: NetLab
    chain_host: Host
    anvil: subprocess.Popen[bytes]
    deployment: Deployment
    deployment_file: Path
    owner: Registry
    procs: list[RoleProcess] = field(default_factory=list)
    proxies: list[subprocess.Popen[bytes]] = field(default_factory=list)
    hosts: dict[str, Host] = field(default_factory=dict)  # role name -> host
    proxied: set[str] = field(default_factory=set)  # hosts whose proxy runs
    store_dir: Path | None = None

    @property
    def rpc_url(self) -> str:
        return f"http://{self.chain_host.ip}:{CHAIN_PORT}"

    @classmethod
    def start(
        cls, work_dir: Path, lab: NetLab, *, chain_delay_s: float = 0.0, job_timeout_s: int = 600
    ) -> NamespaceNetwork:
        """Start anvil on a host of its own (behind a proxy of `chain_delay_s`), deploy the registry."""
        work_dir.mkdir(parents=True, exist_ok=True)
        host = lab.add_host("chain")
        with open(work_dir / "anvil.log", "ab") as log:
            anvil = subprocess.Popen(
                [*lab.exec_prefix(host), str(node_binary("anvil")), "--host", "127.0.0.1"]
                + ["--port", str(CHAIN_PORT), "--chain-id", str(DEV_CHAIN_ID)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        proxies = [_start_proxy(lab, host, CHAIN_PORT, chain_delay_s, work_dir)]
        try:
            rpc_url = f"http://{host.ip}:{CHAIN_PORT}"
            _wait_rpc(rpc_url, anvil, 60)
            deployment = deploy_registry(
                _web3(rpc_url), dev_account(OWNER), RegistryParams(job_timeout=job_timeout_s), rpc_url=rpc_url
            )
            deployment_file = deployment.save(work_dir / "deployment.json")
            registry = Registry.from_deployment(deployment_file, account=dev_account(OWNER))
        except BaseException:
            for p in (anvil, *proxies):
                p.kill()
            raise
        net = cls(work_dir, lab, host, anvil, deployment, deployment_file, registry)
        net.proxies += proxies
        net.hosts["chain"] = host
        return net

    def registry_for(self, index: int) -> Registry:
        return self.owner.with_account(dev_account(index))

    def import_model(
        self, source: str | Path, *, price_wei: int, name: str | None = None, progress: bool = False
    ) -> tuple[int, str, Any]:
        """Import a checkpoint into the network's store and register it on chain; returns (model id, CID, manifest)."""
        from shardnet.model.importer import import_model

        self.store_dir = self.work_dir / "publisher-store"
        cid, manifest = import_model(source, self.store_dir, name=name, progress=progress)
        tx = self.owner.register_model(manifest.name, cid, manifest.num_layers, price_wei)
        return int(tx.event("ModelRegistered").args["modelId"]), cid, manifest

    def _new_host(self, name: str) -> Host:
        """The host called `name` (a restarted role keeps its host, address and proxy), made on first use."""
        if name not in self.hosts:
            self.hosts[name] = self.lab.add_host(name)
        return self.hosts[name]

    def _spawn(
        self, host: Host, module: str, key_index: int, args: list[str], delay_s: float, threads: int
    ) -> RoleProcess:
        name = host.name
        url = f"http://{host.ip}:{SERVICE_PORT}"
        if name not in self.proxied:
            self.proxied.add(name)
            self.proxies.append(_start_proxy(self.lab, host, SERVICE_PORT, delay_s, self.work_dir))
        proc = spawn_role(
            name,
            module,
            DEV_KEYS[key_index],
            ["--deployment", str(self.deployment_file), *args],
            port=SERVICE_PORT,
            log_path=self.work_dir / f"{name}.log",
            threads=threads,
            new_session=True,
            command_prefix=self.lab.exec_prefix(host),
            public_url=url,
        )
        self.procs.append(proc)
        return proc

    def add_worker(
        self,
        name: str,
        key_index: int,
        model_id: int,
        span: LayerSpan,
        *,
        delay_s: float = 0.0,
        threads: int = 1,
        extra: tuple[str, ...] = (),
    ) -> RoleProcess:
        """Start a worker on host `name` with dev key `key_index`, serving `span`, behind a link of `delay_s`."""
        if self.store_dir is None:
            raise RuntimeError(
                "import a model first (NamespaceNetwork.import_model): workers fetch their shards from it"
            )
        host = self._new_host(name)
        args = worker_args(
            model_id,
            span,
            f"http://{host.ip}:{SERVICE_PORT}",
            self.work_dir / name,
            self.store_dir,
            threads,
            *extra,
        )
        return self._spawn(host, "worker.cli", key_index, args, delay_s, threads)

    def start_coordinator(
        self,
        *,
        delay_s: float = 0.0,
        extra: tuple[str, ...] = (),
        name: str = "coordinator",
        key_index: int = COORDINATOR,
    ) -> RoleProcess:
        """Approve dev account `key_index` as a coordinator at its host's address and start `coordinator run` there
        (host `name`: a second coordinator takes another name and key; a restarted one keeps its host)."""
        host = self._new_host(name)
        self.owner.set_coordinator(
            str(dev_account(key_index).address), f"http://{host.ip}:{SERVICE_PORT}", True
        )
        folder = self.work_dir / name
        args = ["--data-dir", str(folder), "--store-dir", str(folder / "store"), *extra]
        return self._spawn(host, "coordinator.cli", key_index, args, delay_s, 1)

    def set_delay(self, name: str, delay_s: float) -> None:
        """Change the one-way delay of host `name`'s link while everything runs (its proxy applies it within 50 ms
        to what it reads from then on)."""
        delay_file(self.work_dir, self.hosts[name]).write_text(f"{delay_s * 1000}")
        time.sleep(0.2)

    def wait_for_workers(self, coordinator: RoleProcess, count: int, timeout: float) -> None:
        """Wait until the coordinator's /health counts `count` live workers."""
        from shardnet.http_json import HttpUnreachable, request_json

        deadline, seen = time.monotonic() + timeout, 0
        while time.monotonic() < deadline:
            try:
                seen = int(
                    (request_json("GET", coordinator.url + "/health", timeout=2)[1] or {}).get("workers", 0)
                )
            except HttpUnreachable:
                seen = 0
            if seen >= count:
                return
            time.sleep(0.25)
        raise RuntimeError(
            f"the coordinator sees {seen} of {count} workers after {timeout:.0f} s; logs in {self.work_dir}"
        )

    def close(self) -> None:
        """Stop every role (SIGTERM: workers drain), then the proxies and anvil; the lab deletes the namespaces."""
        for proc in reversed(self.procs):
            if proc.alive():
                proc.popen.terminate()
        for proc in reversed(self.procs):
            try:
                proc.stop(timeout=15)
            except Exception:  # noqa: BLE001 - keep stopping the others
                proc.popen.kill()
        for p in [*self.proxies, self.anvil]:
            if p.poll() is None:
                p.terminate()
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()

    def __enter__(self) -> NamespaceNetwork:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def delay_file(work_dir: Path, host: Host) -> Path:
    """The file `host`'s proxy reads its one-way delay from (ms), so a test can change it while it runs."""
    return work_dir / f"delay-{host.name}.ms"


def _start_proxy(
    lab: NetLab, host: Host, port: int, delay_s: float, work_dir: Path
) -> subprocess.Popen[bytes]:
    delay_file(work_dir, host).write_text(f"{delay_s * 1000}")
    with open(work_dir / f"proxy-{host.name}.log", "ab") as log:
        return subprocess.Popen(
            [*lab.exec_prefix(host), sys.executable, "-m", "tests.netns.delay_proxy"]
            + [
                "--listen",
                f"{host.ip}:{port}",
                "--target",
                f"127.0.0.1:{port}",
                "--delay-ms",
                str(delay_s * 1000),
                "--delay-file",
                str(delay_file(work_dir, host)),
            ],
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )


def _web3(rpc_url: str) -> Any:
    from web3 import HTTPProvider, Web3

    return Web3(HTTPProvider(rpc_url, request_kwargs={"timeout": 30}))


def _wait_rpc(url: str, process: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise DevnetError(
                f"anvil exited with code {process.returncode} in its namespace before answering {url}"
            )
        try:
            rpc_request(url, "eth_chainId", timeout=1.0)
            return
        except (OSError, ValueError, DevnetError):
            time.sleep(0.1)
    raise DevnetError(f"anvil did not answer on {url} (through its proxy) within {timeout:.0f} s")
