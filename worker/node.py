"""`worker run`: the node's whole life, from stake to shutdown.

Start: connect with the worker's key, close sessions a crash left open, resolve the model, register and
stake if needed, pick the span (flag, this worker's live assignment, or `choose_best_span`), fetch and
verify the span's files by CID, load the block, release the node's other live assignments (of any model:
`release_stale`), announce the assignment (or reuse the live one), follow the chain and serve (`WorkerService`, run by `shardnet.service.run_service`). SIGTERM/SIGINT: refuse new
sessions (503), let open ones finish for the grace period, post the commitments that are due, release the
assignment, exit 0.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from shardnet.chain.heads import ws_url_for
from shardnet.chain.models import resolve_model
from shardnet.chain.registry import AssignmentInfo, ModelInfo, Registry
from shardnet.errors import ConfigError, ShardnetError
from shardnet.service import Lifecycle, run_service
from shardnet.span import LayerSpan
from shardnet.store.manifest import DEFAULT_BACKWARD_FACTOR
from shardnet.wire.http_guard import ConnectionGuard
from worker.adapter_sessions import AdapterEndpoint
from worker.chain_sync import ChainSync
from worker.config import WorkerConfig
from worker.coordinator_check import CoordinatorCheck, JobCoordinatorCheck
from worker.limits import verify_positions
from worker.placement import memory_budget_bytes, place
from worker.server import BlockInfo, ServerLimits, WorkerServer
from worker.span_choice import choose_best_span, default_span_length
from worker.staking import connect, ensure_registered
from worker.state import WorkerState
from worker.training import TrainingAPI, TrainingLimits

log = logging.getLogger(__name__)

GIL_SWITCH_INTERVAL_S = 0.0005

_DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}


def pick_span(cfg: WorkerConfig, model: ModelInfo, live: list[AssignmentInfo], me: str) -> LayerSpan:
    """--layers, else this worker's live assignment, else the span that most raises the weakest coverage."""
    if cfg.span is not None:
        cfg.span.check_within(model.num_layers)
        return cfg.span
    mine = [a for a in live if a.node == me]
    if mine:
        return mine[0].span
    length = cfg.num_layers_per_worker or default_span_length(model.num_layers)
    return choose_best_span(model.num_layers, [a.span for a in live], length)


def fetch_hint(message: str, model: ModelInfo, span: LayerSpan, cfg: WorkerConfig) -> str:
    """A store fetch failure, told in the worker's own settings (--peers, --store-dir), not the store CLI's."""
    detail = message.replace("add a source that holds this model (--from)", "").rstrip()
    where = ", ".join(cfg.peers) if cfg.peers else f"only the store {cfg.store_dir} (no --peers given)"
    return (
        f"{detail}\ncannot get layers {span} of {model.name} (manifest {model.manifest_cid}) from {where}: "
        "add to --peers (or SHARDNET_WORKER_PEERS, or peers in the TOML file) a worker URL (http://host:port) "
        "that serves these layers, or a store folder that holds the model's files"
    )


def kv_bytes_per_token(hf_config: dict[str, Any], span: LayerSpan, dtype: str) -> int:
    """Bytes of KV cache one token position takes in `span` (keys and values of every layer)."""
    heads = int(hf_config.get("num_attention_heads") or 1)
    kv_heads = int(hf_config.get("num_key_value_heads") or heads)
    head_dim = int(hf_config.get("head_dim") or int(hf_config.get("hidden_size", 0)) // heads)
    return 2 * len(span) * kv_heads * head_dim * _DTYPE_BYTES[dtype]


def bind_port(host: str, port: int) -> socket.socket:
    """A socket listening on host:port, taken before anything is sent on chain (aiohttp serves on it later)."""
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ConfigError(
            f"cannot listen on --host {host!r}: {exc.strerror}; nothing was sent on chain"
        ) from exc
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise ConfigError(
                f"port {port} on {host} is in use (another worker?): pass a free --port, or stop the process "
                "that holds it; nothing was sent on chain"
            ) from None
        raise ConfigError(
            f"cannot listen on {host}:{port}: {exc.strerror}; nothing was sent on chain"
        ) from exc
    sock.setblocking(False)
    return sock


@dataclass
class PreparedNode:
    cfg: WorkerConfig
    registry: Registry
    state: WorkerState
    model: ModelInfo
    span: LayerSpan
    assignment_id: int
    block: Any
    info: BlockInfo
    limits: ServerLimits
    sock: socket.socket  # bound and listening since before the first transaction
    backward_factor: int = DEFAULT_BACKWARD_FACTOR  # the manifest's price of a fine-tuning backward position


def release_stale(
    registry: Registry, me: str, model_id: int, span: LayerSpan, live: list[AssignmentInfo]
) -> AssignmentInfo | None:
    """Release every live assignment of node `me` but one of `span` of `model_id` (`live`: that model's), of any
    model; returns the one kept, if any. A worker serves one span of one model at its node's one endpoint: any other
    live assignment is announced and not served (a run on other layers or another model that died before its
    release at shutdown), and the registry draws the node to check every hop such a span covers, where a 401 or 422
    is a fault (`coordinator.disputes`). Other models' lists are read only when the node's count says it holds
    assignments there."""
    mine = [a for a in live if a.node == me]
    kept = next((a for a in mine if a.span == span), None)
    stale = [a for a in mine if a is not kept]
    if registry.get_node(me).live_assignments > len(mine):
        for other in range(1, registry.model_count() + 1):
            if other != model_id:
                held = (registry.get_assignment(i) for i in registry.live_assignments(other))
                stale += [a for a in held if a.node == me]
    for a in stale:
        log.info(
            "releasing assignment %d (model %d, layers %s): now serving model %d, layers %s",
            a.assignment_id,
            a.model_id,
            a.span,
            model_id,
            span,
        )
        registry.release_shard(a.assignment_id)
    return kept


def prepare(cfg: WorkerConfig, *, reset_state: bool = False) -> PreparedNode:
    """Everything before serving (blocking calls: chain, downloads, model loading). `reset_state` clears a
    database that belongs to another chain (else it is refused)."""
    import torch

    from shardnet.chain.identity import identity_of
    from shardnet.db import check_chain_identity, make_engine
    from shardnet.model.block import load_block
    from shardnet.store.fetch import FetchError, fetch_files
    from worker.private_model import is_private, restore_private_span

    torch.set_num_threads(cfg.threads)
    # everything that can fail without the chain comes before the first transaction: the port, the key,
    # the database, the model and its files
    sock = bind_port(cfg.host, cfg.port)
    try:
        registry = connect(cfg)
        assert registry.account is not None
        me = registry.account.address
        engine = make_engine(cfg.db_url, default_path=cfg.data_dir / "worker.db")
        check_chain_identity(
            engine,
            "worker",
            identity_of(registry),
            reset=reset_state,
            what=f"the worker's database ({engine.url.render_as_string(hide_password=True)})",
        )
        state = WorkerState(engine, me)
        lost = state.close_lost_sessions()
        if lost:
            log.warning("closed %d sessions left open by an earlier run: %s", len(lost), ", ".join(lost))
        model = resolve_model(registry, cfg.model)
        live = [registry.get_assignment(a) for a in registry.live_assignments(model.model_id)]
        span = pick_span(cfg, model, live, me)
        log.info("serving %s (model %d) layers %s of %d", model.name, model.model_id, span, model.num_layers)
        # without peers the store itself is the only source: every file must already be there (verified)
        sources: list[str | Path] = [*cfg.peers] or [cfg.store_dir]
        try:
            manifest_cid = model.manifest_cid
            if cfg.keyholder or is_private(cfg, manifest_cid):  # private: announce, get keys, restore
                manifest_cid, live = restore_private_span(cfg, registry, model, span, live)
            manifest = fetch_files(manifest_cid, span, sources, cfg.store_dir, progress=False)
        except FetchError as exc:
            raise FetchError(fetch_hint(str(exc), model, span, cfg)) from exc
        placed = place(cfg, manifest)  # before anything goes on chain: a refused dtype or GPU costs nothing
        block = load_block(
            cfg.store_dir, manifest.to_json(), span, getattr(torch, placed.dtype), placed.device
        )
        memory_budget = memory_budget_bytes(cfg, placed.device)  # after the weights took their share
        node = ensure_registered(registry, cfg.endpoint, cfg.stake_wei)
        log.info("node %s registered at %s with a stake of %d wei", me, node.endpoint, node.stake)
    except BaseException:
        sock.close()
        raise
    reuse = release_stale(registry, me, model.model_id, span, live)
    if reuse is not None:
        assignment_id = reuse.assignment_id
        log.info("reusing live assignment %d", assignment_id)
    else:
        assignment_id = int(
            registry.announce_shard(model.model_id, span).event("ShardAnnounced").args["assignmentId"]
        )
        log.info("announced assignment %d", assignment_id)
    positions = getattr(block.config, "max_position_embeddings", None) or cfg.max_length
    info = BlockInfo(
        span=span,
        num_layers=model.num_layers,
        is_first=block.is_first,
        is_last=block.is_last,
        hidden_size=block.hidden_size,
        vocab_size=block.vocab_size,
        kv_bytes_per_token=kv_bytes_per_token(manifest.config, span, placed.dtype),
    )
    limits = ServerLimits(
        max_sessions=cfg.max_sessions,
        max_per_coordinator=cfg.max_sessions_per_coordinator,
        max_length=min(cfg.max_length, int(positions)),
        max_verify_positions=verify_positions(
            int(positions), registry.max_job_tokens(), registry.max_prompt_tokens()
        ),
        max_memory_bytes=memory_budget,
        idle_timeout_s=cfg.session_timeout_s,
        unused_reservation_s=cfg.reservation_timeout_s,
        max_body_bytes=cfg.max_body_bytes,
        forward_timeout_s=cfg.step_forward_timeout_s,
        body_timeout_s=cfg.body_timeout_s,
        batch_window_s=cfg.batch_window_ms / 1000,
        max_batch=cfg.max_batch,
    )
    return PreparedNode(
        cfg, registry, state, model, span, assignment_id, block, info, limits, sock, manifest.backward_factor
    )


class WorkerService:
    """The serving part of a worker's life (`shardnet.service`): start the HTTP server and the chain
    follower; drain refuses new sessions (503) and lets open ones finish for `drain_grace_s`; stop
    closes what is left and posts the commitments that are due."""

    def __init__(self, node: PreparedNode) -> None:
        self.node = node
        cfg = node.cfg
        coordinator_check = CoordinatorCheck(node.registry.is_coordinator)
        job_check = JobCoordinatorCheck(lambda job_id: node.registry.job_record(job_id).coordinator)
        self.sync = ChainSync(
            node.registry,
            node.state,
            poll_interval_s=cfg.poll_interval_s,
            confirmations=cfg.confirmations,
            settle_window_s=cfg.settle_window_s,
            domain=node.registry.domain(),
            # a revoked coordinator's tickets are refused at once, not when the approval cache expires
            on_coordinator_set=lambda address, _approved: coordinator_check.forget(address),
            ws_url=ws_url_for(node.registry.rpc_url, cfg.ws_url),
            on_job_submitted=job_check.remember,  # pushed events: a new job's check needs no chain read
        )
        # fine-tuning sessions (/v1/train/..., docs/finetune.md), backward priced as the model's manifest says
        self.training = TrainingAPI(TrainingLimits(backward_factor=node.backward_factor))
        self.adapters = AdapterEndpoint()  # LoRA adapters of inference sessions (worker.adapter_sessions)
        self.server = WorkerServer(
            address=node.registry.account.address if node.registry.account else "",
            model_name=node.model.name,
            model_id=node.model.model_id,
            block=node.block,
            info=node.info,
            is_coordinator=coordinator_check,
            job_coordinator=job_check,
            state=node.state,
            limits=node.limits,
            extra_routes=[*_shard_routes(cfg.store_dir), *self.training.routes(), *self.adapters.routes()],
            perturb_outputs=cfg.perturb_outputs,
            on_session_closed=self.sync.wake,
            chain_id=self.sync.domain.chain_id,
            registry_address=self.sync.domain.registry,
            signer=self.sync.sign,
            verdict_signer=self.sync.sign_verdict,
        )
        self.training.bind(self.server)
        self.adapters.bind(self.server)
        self._runner: web.AppRunner | None = None
        self._sync_started = False

    async def start(self) -> None:
        cfg = self.node.cfg
        # The step thread needs the GIL between torch ops; with the default 5 ms switch interval a chain-polling
        # or HTTP thread that holds it can delay each layer's Python glue by up to 5 ms.
        sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
        if cfg.perturb_outputs > 0:
            log.warning(
                "--perturb-outputs %g: this worker adds noise to its outputs (for testing the verifier)",
                cfg.perturb_outputs,
            )
        # A connection that sends no whole request head within header_timeout_s is closed (aiohttp arms its
        # keep-alive timer when a connection opens); a body not sent within body_timeout_s gets 408 from the
        # handler; after an early answer (408, 413) the unread rest of a body is drained for at most
        # header_timeout_s (aiohttp's lingering_time), then the connection is closed. No socket is held for ever.
        self._runner = web.AppRunner(
            self.server.app(),
            access_log=None,
            keepalive_timeout=cfg.header_timeout_s,
            lingering_time=cfg.header_timeout_s,
        )
        await self._runner.setup()
        ConnectionGuard.install(self._runner, max_per_ip=cfg.max_connections_per_ip)
        await web.SockSite(self._runner, self.node.sock).start()  # bound before the first transaction
        self.sync.start()
        self._sync_started = True
        log.info(
            "worker %s serving %s layers %s at %s",
            self.server.address,
            self.node.model.name,
            self.node.span,
            cfg.endpoint,
        )

    async def drain(self) -> None:
        grace = self.node.cfg.drain_grace_s
        log.info(
            "stopping: no new sessions; waiting up to %.0f s for %d open sessions",
            grace,
            len(self.server.sessions),
        )
        await self.server.drain(grace)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()  # closes what is left and flushes the database writes
        if self._sync_started:
            await asyncio.to_thread(self.sync.stop, True)
        # close the database's connections: SQLite folds its write-ahead log into the file on the last close
        # (the interpreter's teardown does not collect the pool: shardnet.cli.freeze_heap_at_exit)
        self.node.state.engine.dispose()


def _shard_routes(store_dir: Path) -> Any:
    from shardnet.store.http import make_shard_routes

    return make_shard_routes(store_dir)


def release(node: PreparedNode) -> None:
    """Release the assignment on chain (a failure is logged: the next start reuses or releases it)."""
    try:
        node.registry.release_shard(node.assignment_id)
        log.info("released assignment %d", node.assignment_id)
    except ShardnetError as exc:  # a revert, or the chain node already gone
        log.warning(
            "could not release assignment %d: %s (the next start reuses or releases it)",
            node.assignment_id,
            exc,
        )


def run_worker(cfg: WorkerConfig, *, reset_state: bool = False) -> int:
    """The `worker run` command: returns the exit status."""
    node = prepare(cfg, reset_state=reset_state)
    try:
        asyncio.run(run_service(WorkerService(node), Lifecycle("worker")))
    finally:
        release(node)
    log.info("worker stopped")
    return 0
