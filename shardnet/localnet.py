"""A whole shardnet on one machine: an anvil devnet, the registry, a model store, workers and a coordinator
as separate processes talking HTTP on 127.0.0.1, each acting with one of anvil's funded dev keys. The
`shardnet localnet` command, the demo (scripts/demo.py), the benchmark (scripts/bench.py) and the
integration tests build on it; everything it starts is stopped by `close()` (or the `with` block).

    with LocalNetwork.start(Path("/tmp/net")) as net:
        model_id, cid, manifest = net.import_model(gguf_path, price_wei=10**12)
        coordinator = net.start_coordinator()
        workers = [net.add_worker(i, model_id, span) for i, span in enumerate(even_spans(30, 3))]
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shardnet.chain.deploy import Deployment, deploy_registry
from shardnet.chain.devnet import DEV_KEYS, Devnet, free_port
from shardnet.chain.registry import Registry, RegistryParams
from shardnet.errors import ConfigError
from shardnet.http_json import HttpUnreachable, request_json
from shardnet.role_process import RoleProcess, RoleProcessError, spawn_role
from shardnet.span import LayerSpan

if TYPE_CHECKING:
    from eth_account.signers.local import LocalAccount

# dev accounts by role (indexes into anvil's funded DEV_KEYS)
OWNER, COORDINATOR, CLIENT = 0, 1, 2
FIRST_WORKER = 3
GPU_MEMORY_SHARE = 0.8  # worker --gpu-memory-fraction default, split between the workers that share one GPU


def dev_account(index: int) -> LocalAccount:
    from eth_account import Account

    account: LocalAccount = Account.from_key(DEV_KEYS[index])
    return account


def even_spans(num_layers: int, workers: int) -> list[LayerSpan]:
    """`workers` contiguous spans covering layers 0..num_layers, as equal as can be (the first ones longer)."""
    if not 1 <= workers <= num_layers:
        raise ConfigError(
            f"cannot split {num_layers} layers over {workers} workers: give 1 to {num_layers} workers"
        )
    base, extra = divmod(num_layers, workers)
    spans, start = [], 0
    for i in range(workers):
        end = start + base + (1 if i < extra else 0)
        spans.append(LayerSpan(start, end))
        start = end
    return spans


@dataclass
class LocalNetwork:
    """Start with `LocalNetwork.start(work_dir)`, then `import_model`, `add_worker`, `start_coordinator`."""

    work_dir: Path
    devnet: Devnet
    deployment: Deployment
    deployment_file: Path
    owner: Registry
    procs: list[RoleProcess] = field(default_factory=list)
    store_dir: Path | None = None

    @classmethod
    def start(cls, work_dir: Path, *, job_timeout_s: int = 600, port: int | None = None) -> LocalNetwork:
        """Start anvil (on `port`, default any free one), deploy the registry, write the deployment file."""
        work_dir.mkdir(parents=True, exist_ok=True)
        devnet = Devnet.start("anvil", port=port, log_file=work_dir / "anvil.log")
        try:
            owner = dev_account(OWNER)
            deployment = deploy_registry(
                devnet.web3(), owner, RegistryParams(job_timeout=job_timeout_s), rpc_url=devnet.rpc_url
            )
            deployment_file = deployment.save(work_dir / "deployment.json")
            registry = Registry.from_deployment(deployment_file, account=owner)
        except BaseException:
            devnet.stop()
            raise
        return cls(work_dir, devnet, deployment, deployment_file, registry)

    def registry_for(self, index: int) -> Registry:
        return self.owner.with_account(dev_account(index))

    def address(self, index: int) -> str:
        return str(dev_account(index).address)

    def import_model(
        self, source: str | Path, *, price_wei: int, name: str | None = None, progress: bool = True
    ) -> tuple[int, str, Any]:
        """Import a checkpoint into the network's store and register it on chain; returns (model id, CID, manifest)."""
        from shardnet.model.importer import import_model

        self.store_dir = self.work_dir / "publisher-store"
        cid, manifest = import_model(source, self.store_dir, name=name, progress=progress)
        tx = self.owner.register_model(manifest.name, cid, manifest.num_layers, price_wei)
        return int(tx.event("ModelRegistered").args["modelId"]), cid, manifest

    def _spawn(
        self, name: str, module: str, key_index: int, args: list[str], port: int, threads: int
    ) -> RoleProcess:
        proc = spawn_role(
            name,
            module,
            DEV_KEYS[key_index],
            ["--deployment", str(self.deployment_file), *args],
            port=port,
            log_path=self.work_dir / f"{name}.log",
            threads=threads,
            new_session=True,
        )
        self.procs.append(proc)
        return proc

    def add_worker(
        self,
        index: int,
        model_id: int,
        span: LayerSpan,
        *,
        threads: int = 2,
        extra: tuple[str, ...] = (),
        port: int | None = None,
        device: str | None = None,
        sharing: int = 1,
    ) -> RoleProcess:
        """Start worker number `index` (0-based) serving `span`; it stakes, fetches its shard and announces it.

        `device` is its --device (default: the worker's own, auto); `sharing` workers on one GPU each get
        that share of its free memory for their sessions (docs/gpu.md)."""
        if self.store_dir is None:
            raise ConfigError(
                "import a model first (LocalNetwork.import_model): workers fetch their shards from it"
            )
        port = port or free_port()
        name = f"worker{index + 1}"
        args = worker_args(
            model_id,
            span,
            f"http://127.0.0.1:{port}",
            self.work_dir / name,
            self.store_dir,
            threads,
            *device_flags(device, sharing),
            *extra,
        )
        return self._spawn(name, "worker.cli", FIRST_WORKER + index, args, port, threads)

    def start_coordinator(
        self,
        *,
        extra: tuple[str, ...] = (),
        port: int | None = None,
        key_index: int = COORDINATOR,
        name: str = "coordinator",
    ) -> RoleProcess:
        """Approve a coordinator's dev account (`key_index`; a second coordinator needs another) on chain and start
        `coordinator run` with its files under `name`."""
        port = port or free_port()
        self.owner.set_coordinator(self.address(key_index), f"http://127.0.0.1:{port}", True)
        coordinator_dir = self.work_dir / name
        args = ["--data-dir", str(coordinator_dir), "--store-dir", str(coordinator_dir / "store"), *extra]
        return self._spawn(name, "coordinator.cli", key_index, args, port, 1)

    def wait_for_workers(self, coordinator: RoleProcess, count: int, timeout: float) -> None:
        """Wait until the coordinator's /health counts `count` live workers."""
        deadline = time.monotonic() + timeout
        seen = 0
        while time.monotonic() < deadline:
            try:
                _status, body = request_json("GET", coordinator.url + "/health", timeout=2)
                seen = int((body or {}).get("workers", 0))
            except HttpUnreachable:
                seen = 0
            if seen >= count:
                return
            time.sleep(0.25)
        raise RoleProcessError(
            f"the coordinator sees {seen} of {count} workers after {timeout:.0f} s; "
            f"see the logs in {self.work_dir}"
        )

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


def worker_args(
    model_id: int, span: LayerSpan, public_url: str, data_dir: Path, peers: Path, threads: int, *extra: str
) -> list[str]:
    """`worker run` flags of a development worker: its data and store under `data_dir`, shards from `peers`."""
    return [
        "--model",
        str(model_id),
        "--layers",
        str(span),
        "--public-url",
        public_url,
        "--data-dir",
        str(data_dir),
        "--store-dir",
        str(data_dir / "store"),
        "--peers",
        str(peers),
        "--threads",
        str(threads),
        *extra,
    ]


def device_flags(device: str | None, sharing: int = 1) -> list[str]:
    """A worker's --device flags; workers sharing a GPU split the default share of its free memory."""
    if device is None:
        return []
    flags = ["--device", device]
    if device != "cpu" and sharing > 1:
        flags += ["--gpu-memory-fraction", f"{GPU_MEMORY_SHARE / sharing:.4f}"]
    return flags
