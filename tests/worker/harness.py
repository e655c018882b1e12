"""Helpers for the worker's integration tests: real `worker run` processes on 127.0.0.1 against real anvil."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import uuid
from collections.abc import Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from shardnet.chain.devnet import free_port
from shardnet.span import LayerSpan
from shardnet.wire.eip712 import Domain
from shardnet.wire.tickets import sign_ticket
from tests.fixtures_chain import ticket_expiry
from tests.service_proc import ServiceProc

if TYPE_CHECKING:
    from eth_account.signers.local import LocalAccount

    from shardnet.chain.registry import Registry
    from worker.server import WorkerServer

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def ticket(
    domain: Domain,
    coordinator: LocalAccount,
    worker: str,
    span: LayerSpan,
    job_id: int = 0,
    session_id: str | None = None,
    max_positions: int = 4096,
) -> dict[str, Any]:
    """A ticket of `coordinator` for `worker` in the registry's EIP-712 `domain` (job 0: no job, never paid)."""
    return sign_ticket(
        coordinator,
        worker=worker,
        session_id=session_id or uuid.uuid4().hex,
        job_id=job_id,
        span=span,
        max_positions=max_positions,
        expires_at=ticket_expiry(600),
        chain_id=domain.chain_id,
        registry=domain.registry,
    )


#: where the tests that play the coordinator themselves say their coordinators listen (nobody does)
NOWHERE = "http://127.0.0.1:9"

#: the test workers' --drain-grace-s (the worker's default is 30 s): on SIGTERM a worker waits this long for its
#: open sessions to close, then closes the rest itself. Tests that stop a worker leave sessions open that
#: nobody will close, so the default made every such stop a 30 s wait on the clock; a test of the drain
#: itself passes its own --drain-grace-s (a later flag wins)
TEST_DRAIN_GRACE_S = 2.0


def tiny_llama_on_chain(
    tmp: Path,
    anvil: Any,
    owner_account: LocalAccount,
    deployment: Any,
    cid: str,
    coordinators: Sequence[LocalAccount] = (),
) -> tuple[Path, Registry, int]:
    """Save the module's `deployment` in `tmp`, register the tiny Llama of `cid` (4 layers, 10**6 wei a layer token)
    as `owner_account` and approve `coordinators` (at NOWHERE: the test plays the coordinator); returns the
    deployment file, the owner's bindings and the model id."""
    from shardnet.chain.registry import Registry

    dep_file = deployment.save(tmp / "deployment.json")
    owner = Registry(anvil.w3, deployment.registry, owner_account, deploy_block=deployment.deploy_block)
    model_id = int(owner.register_model("tiny-llama", cid, 4, 10**6).event("ModelRegistered").args["modelId"])
    for coordinator in coordinators:
        owner.set_coordinator(coordinator.address, NOWHERE, True)
    return dep_file, owner, model_id


def signing_server(
    node: LocalAccount,
    block: Any,
    domain: Domain,
    span: LayerSpan,
    *,
    is_last: bool,
    is_coordinator: Callable[[str], bool],
    num_layers: int = 4,
    model_id: int = 1,
    job_coordinator: Callable[[int], str | None] | None = None,
) -> WorkerServer:
    """A `WorkerServer` in this process serving `block` (layers `span`, starting at layer 0, of a `num_layers` model)
    as `node`: it signs its commitments and its verdicts with `node`'s key in the registry's EIP-712 `domain`."""
    from shardnet.chain.commitments import SignedCommitment, sign_commitment, sign_verdict
    from shardnet.wire.eip712 import CompactSignature
    from worker.server import BlockInfo, WorkerServer

    def commit(job_id: int, span: LayerSpan, positions: int, steps: int, root: bytes) -> SignedCommitment:
        return sign_commitment(
            node, domain, job_id=job_id, span=span, positions=positions, steps=steps, root=root
        )

    def verdict(job_id: int, accused: str, root: bytes, index: int, leaf: bytes) -> CompactSignature:
        return sign_verdict(
            node, domain, job_id=job_id, accused=accused, root=root, leaf_index=index, leaf=leaf
        )

    return WorkerServer(
        address=node.address,
        model_name="tiny",
        model_id=model_id,
        block=block,
        info=BlockInfo(span, num_layers, True, is_last, block.hidden_size, block.vocab_size, 1),
        is_coordinator=is_coordinator,
        job_coordinator=job_coordinator,
        chain_id=domain.chain_id,
        registry_address=domain.registry,
        signer=commit,
        verdict_signer=verdict,
    )


@dataclass
class WorkerProc(ServiceProc):
    """One `python -m worker.cli run` subprocess."""

    role: ClassVar[str] = "worker"
    module: ClassVar[str] = "worker.cli"
    key_var: ClassVar[str] = "WORKER_TEST_KEY"
    ready_timeout: ClassVar[float] = 90.0

    account: LocalAccount
    args: list[str]
    log_path: Path
    port: int
    proc: subprocess.Popen[bytes] | None = None
    env: dict[str, str] = field(default_factory=dict)

    @property
    def address(self) -> str:
        return str(self.account.address)

    def key_hex(self) -> str:
        return str(self.account.key.hex())

    def extra_args(self) -> list[str]:
        return ["--threads", "1"]


def stop_workers(workers: Iterable[WorkerProc | None]) -> None:
    """Stop `workers` together: SIGTERM every running one first, so that they drain, release and exit in parallel
    (stopped one by one, their drains and exits add up), then make sure each is gone."""
    running = [w for w in workers if w is not None]
    for w in running:
        if w.proc is not None and w.proc.poll() is None:
            w.signal(signal.SIGTERM)
    for w in running:
        w.stop()


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
            "--drain-grace-s",
            str(TEST_DRAIN_GRACE_S),
            *extra,
        ],
        log_path=tmp / f"{name}.log",
        port=port or free_port(),
    ).start()


def submit_for(client: Registry, coordinator: str, model_id: int) -> int:
    """A paid job naming `coordinator` (protocol v2: no route goes on chain); returns its id."""
    quote = client.quote(model_id, 8)
    return int(
        client.submit_job(model_id, b"\x11" * 32, 8, coordinator, value=quote)
        .event("JobSubmitted")
        .args["jobId"]
    )


def posted_roots(registry: Registry, job_id: int) -> dict[str, bytes]:
    """node -> root of every CommitmentPosted of `job_id` (a worker's own fallback posts)."""
    events = registry.get_logs(
        registry.deploy_block, registry.block_number(), ["CommitmentPosted"], first_indexed=job_id
    )
    return {str(e.args["node"]): bytes(e.args["root"]) for e in events}
