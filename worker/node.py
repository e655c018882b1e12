"""`worker run`: the node's whole life, from stake to shutdown.

Start: connect with the worker's key, close sessions a crash left open, resolve the model, register and
stake if needed, pick the span (flag, this worker's live assignment, or `choose_best_span`), fetch and
verify the span's files by CID, load the block, announce the assignment (or reuse the live one), follow
the chain and serve. SIGTERM/SIGINT: refuse new sessions (503), let open ones finish for the grace
period, post the commitments that are due, release the assignment, exit 0.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from shardnet.chain.errors import ContractRevert
from shardnet.chain.registry import AssignmentInfo, ModelInfo, Registry
from shardnet.errors import ConfigError
from shardnet.span import LayerSpan
from shardnet.wire.http_guard import ConnectionGuard
from worker.accounts import connect, ensure_registered
from worker.chain_sync import ChainSync
from worker.config import WorkerConfig
from worker.coordinator_check import CoordinatorCheck
from worker.server import BlockInfo, ServerLimits, WorkerServer
from worker.span_choice import choose_best_span, default_span_length
from worker.state import WorkerState

log = logging.getLogger(__name__)

GIL_SWITCH_INTERVAL_S = 0.0005

_DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}


def resolve_model(registry: Registry, model: str | None) -> ModelInfo:
    """The on-chain model named by id ("3") or by registered name (the newest of that name)."""
    if not model:
        raise ConfigError("no model given: pass --model with the on-chain model id or its registered name")
    count = registry.model_count()
    if model.isdigit():
        model_id = int(model)
        if not 1 <= model_id <= count:
            raise ConfigError(f"no model {model_id} on chain: model ids run from 1 to {count}")
        return registry.get_model(model_id)
    models = [registry.get_model(i) for i in range(1, count + 1)]
    named = [m for m in models if m.name == model]
    if not named:
        known = ", ".join(sorted({m.name for m in models})) or "none"
        raise ConfigError(
            f"no model named {model!r} on chain (registered: {known}); register it or fix --model"
        )
    return named[-1]


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


def prepare(cfg: WorkerConfig) -> PreparedNode:
    """Everything before serving (blocking calls: chain, downloads, model loading)."""
    import torch

    from shardnet.db import make_engine
    from shardnet.model.block import load_block
    from shardnet.store.fetch import FetchError, fetch_files

    torch.set_num_threads(cfg.threads)
    registry = connect(cfg)
    assert registry.account is not None
    me = registry.account.address
    state = WorkerState(make_engine(cfg.db_url, default_path=cfg.data_dir / "worker.db"), me)
    lost = state.close_lost_sessions()
    if lost:
        log.warning("closed %d sessions left open by an earlier run: %s", len(lost), ", ".join(lost))
    model = resolve_model(registry, cfg.model)
    node = ensure_registered(registry, cfg.endpoint, cfg.stake_wei)
    log.info("node %s registered at %s with a stake of %d wei", me, node.endpoint, node.stake)
    live = [registry.get_assignment(a) for a in registry.live_assignments(model.model_id)]
    span = pick_span(cfg, model, live, me)
    log.info("serving %s (model %d) layers %s of %d", model.name, model.model_id, span, model.num_layers)
    # without peers the store itself is the only source: every file must already be there (verified)
    sources: list[str | Path] = [*cfg.peers] or [cfg.store_dir]
    try:
        manifest = fetch_files(model.manifest_cid, span, sources, cfg.store_dir, progress=False)
    except FetchError as exc:
        raise FetchError(fetch_hint(str(exc), model, span, cfg)) from exc
    block = load_block(cfg.store_dir, manifest.to_json(), span, getattr(torch, cfg.dtype))
    mine = [a for a in live if a.node == me]
    for stale in (a for a in mine if a.span != span):
        log.info("releasing assignment %d (layers %s): now serving %s", stale.assignment_id, stale.span, span)
        registry.release_shard(stale.assignment_id)
    reuse = next((a for a in mine if a.span == span), None)
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
        kv_bytes_per_token=kv_bytes_per_token(manifest.config, span, cfg.dtype),
    )
    limits = ServerLimits(
        max_sessions=cfg.max_sessions,
        max_per_coordinator=cfg.max_sessions_per_coordinator,
        max_length=min(cfg.max_length, int(positions)),
        max_memory_bytes=int(cfg.max_cache_mb * 2**20),
        idle_timeout_s=cfg.session_timeout_s,
        max_body_bytes=cfg.max_body_bytes,
        forward_timeout_s=cfg.step_forward_timeout_s,
        body_timeout_s=cfg.body_timeout_s,
    )
    return PreparedNode(cfg, registry, state, model, span, assignment_id, block, info, limits)


async def serve(node: PreparedNode) -> None:
    """Serve until SIGTERM/SIGINT, then drain."""
    from shardnet.store.http import make_shard_routes

    cfg = node.cfg
    # The step thread needs the GIL between torch ops; with the default 5 ms switch interval a chain-polling
    # or HTTP thread that holds it can delay each layer's Python glue by up to 5 ms.
    sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
    coordinator_check = CoordinatorCheck(node.registry.is_coordinator)
    sync = ChainSync(
        node.registry,
        node.state,
        poll_interval_s=cfg.poll_interval_s,
        confirmations=cfg.confirmations,
        on_coordinator_set=lambda address, _approved: coordinator_check.forget(address),
    )
    if cfg.perturb_outputs > 0:
        log.warning(
            "--perturb-outputs %g: this worker adds noise to its outputs (for testing the verifier)",
            cfg.perturb_outputs,
        )
    server = WorkerServer(
        address=node.registry.account.address if node.registry.account else "",
        model_name=node.model.name,
        model_id=node.model.model_id,
        block=node.block,
        info=node.info,
        is_coordinator=coordinator_check,
        state=node.state,
        limits=node.limits,
        extra_routes=make_shard_routes(cfg.store_dir),
        perturb_outputs=cfg.perturb_outputs,
        on_session_closed=sync.wake,
    )
    # A connection that sends no whole request head within header_timeout_s is closed (aiohttp arms its
    # keep-alive timer when a connection opens); a body not sent within body_timeout_s gets 408 from the
    # handler; after an early answer (408, 413) the unread rest of a body is drained for at most
    # header_timeout_s (aiohttp's lingering_time), then the connection is closed. So no socket is held for ever.
    runner = web.AppRunner(
        server.app(),
        access_log=None,
        keepalive_timeout=cfg.header_timeout_s,
        lingering_time=cfg.header_timeout_s,
    )
    await runner.setup()
    ConnectionGuard.install(runner, max_per_ip=cfg.max_connections_per_ip)
    site = web.TCPSite(runner, cfg.host, cfg.port)
    await site.start()
    sync.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    log.info("worker %s serving %s layers %s at %s", server.address, node.model.name, node.span, cfg.endpoint)
    try:
        await stop.wait()
        log.info(
            "stopping: no new sessions; waiting up to %.0f s for %d open sessions",
            cfg.drain_grace_s,
            len(server.sessions),
        )
        await server.drain(cfg.drain_grace_s)
    finally:
        await runner.cleanup()  # closes what is left and flushes the database writes
        await asyncio.to_thread(sync.stop, True)


def release(node: PreparedNode) -> None:
    """Release the assignment on chain (a failure is logged: the next start reuses or releases it)."""
    try:
        node.registry.release_shard(node.assignment_id)
        log.info("released assignment %d", node.assignment_id)
    except ContractRevert as exc:
        log.warning("could not release assignment %d: %s", node.assignment_id, exc)


def run_worker(cfg: WorkerConfig) -> int:
    """The `worker run` command: returns the exit status."""
    node = prepare(cfg)
    try:
        asyncio.run(serve(node))
    finally:
        release(node)
    log.info("worker stopped")
    return 0
