"""A worker's side of a private model (docs/storage.md): announce the shard, get the keys, restore the span.

The keyholder hands keys only to a worker with a live shard of the model, so for a private model (its on-chain
manifest is a ``shardnet-private/1`` manifest) the worker registers and announces *before* it has the files;
then it asks the keyholder (``--keyholder``), rebuilds the span's files from any k pieces per file (from
``--peers``) into its store under their plaintext CIDs, and loading goes on as for a public model.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from shardnet.chain.registry import Registry
from shardnet.chain.registry_types import AssignmentInfo, ModelInfo
from shardnet.errors import ConfigError
from shardnet.span import LayerSpan
from shardnet.store.fetch import ensure_file
from shardnet.store.private.keyholder import request_keys
from shardnet.store.private.manifest import PRIVATE_FORMAT
from shardnet.store.private.model import restore_model
from worker.config import WorkerConfig
from worker.staking import ensure_registered

log = logging.getLogger(__name__)


def is_private(cfg: WorkerConfig, manifest_cid: str) -> bool:
    """True when the model's manifest (fetched and CID-checked) is a private manifest."""
    sources: list[str | Path] = [*cfg.peers] or [cfg.store_dir]
    path = ensure_file(manifest_cid, sources, cfg.store_dir, label="manifest")
    try:
        return bool(json.loads(path.read_bytes()).get("format") == PRIVATE_FORMAT)
    except (ValueError, AttributeError):
        return False


def restore_private_span(
    cfg: WorkerConfig, registry: Registry, model: ModelInfo, span: LayerSpan, live: list[AssignmentInfo]
) -> tuple[str, list[AssignmentInfo]]:
    """Announce ``span`` (if not live yet), get the keys, restore the span; returns (model manifest CID, live)."""
    if not cfg.keyholder:
        raise ConfigError(
            f"model {model.name} is private (manifest {model.manifest_cid}): pass --keyholder URL, the "
            "owner's `shardnet keyholder run`, to get its keys"
        )
    assert registry.account is not None
    me = registry.account.address
    ensure_registered(registry, cfg.endpoint, cfg.stake_wei)
    announced: int | None = None
    if not any(a.node == me and a.span == span for a in live):
        announced = int(
            registry.announce_shard(model.model_id, span).event("ShardAnnounced").args["assignmentId"]
        )
        log.info(
            "announced assignment %d (layers %s) to get the keys of private model %s",
            announced,
            span,
            model.name,
        )
        live = [registry.get_assignment(a) for a in registry.live_assignments(model.model_id)]
    try:
        keys = request_keys(cfg.keyholder, bytes(registry.account.key), model.manifest_cid, model.model_id)
        model_cid, _ = restore_model(
            model.manifest_cid, keys, span, cfg.store_dir, sources=[str(p) for p in cfg.peers]
        )
    except BaseException:
        if announced is not None:  # no files, no service: do not leave a live shard behind
            log.warning("releasing assignment %d: the private model's files could not be restored", announced)
            registry.release_shard(announced)
        raise
    log.info("restored layers %s of private model %s (model manifest %s)", span, model.name, model_cid)
    return model_cid, live
