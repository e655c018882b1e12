"""The owner's keyholder: hands a private model's file keys, wrapped, to the workers the chain names, and no one else.

``POST /v1/keys`` takes a worker's signed ``KeyRequest``. The keyholder recovers the worker's public key from
the signature, then asks the chain: is that address a registered node, not jailed, with a live shard of the
model (a ``ShardAnnounced`` event for this model whose assignment is still live)? Only then does it answer
the file keys wrapped to that public key (``wrap.wrap_keys``); otherwise 403 with the reason. The model's
on-chain manifest CID must be the private manifest the keys belong to, so keys never go out for another model.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
import urllib.error
import urllib.request
from typing import TYPE_CHECKING, Any

from aiohttp import web

from shardnet.store.private.keyfile import FileKeys
from shardnet.store.private.wrap import (
    REQUEST_TTL,
    KeyAccessError,
    KeyRequest,
    public_key_of,
    sign_request,
    unwrap_keys,
    wrap_keys,
)
from shardnet.wire.json_limits import BodyRejected, loads_limited

if TYPE_CHECKING:
    from shardnet.chain.registry import Registry

log = logging.getLogger(__name__)

KEYS_PATH = "/v1/keys"


class AnnouncedShards:
    """The registry's ``ShardAnnounced`` events by (model, node), read from the deploy block once and then only
    from the block after the last one read (not from the start on every request). Reorgs are not followed:
    an assignment is still re-checked live on chain before keys go out."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self.next_block = registry.deploy_block
        self._assignments: dict[tuple[int, str], list[int]] = {}
        self._lock = threading.Lock()

    def assignments(self, model_id: int, address: str) -> list[int]:
        """Assignment ids announced for ``model_id`` by ``address`` up to the chain's head."""
        with self._lock:
            head = self.registry.block_number()
            if head >= self.next_block:
                for event in self.registry.get_logs(self.next_block, head, ["ShardAnnounced"]):
                    key = (int(event.args["modelId"]), str(event.args["node"]).lower())
                    self._assignments.setdefault(key, []).append(int(event.args["assignmentId"]))
                self.next_block = head + 1
            return list(self._assignments.get((model_id, address.lower()), []))


def refusal(
    registry: Registry, address: str, model_id: int, shards: AnnouncedShards | None = None
) -> str | None:
    """Why ``address`` may not have the keys of model ``model_id`` (None: it may)."""
    node = registry.get_node(address)
    if not node.registered:
        return f"{address} is not a registered node"
    if node.jailed:
        return f"{address} is jailed"
    for assignment_id in (shards or AnnouncedShards(registry)).assignments(model_id, address):
        if registry.get_assignment(assignment_id).live:
            return None
    return f"{address} has no live shard of model {model_id} (no ShardAnnounced still live)"


def check_model(registry: Registry, keys: FileKeys, model_id: int) -> None:
    """Refuse to serve keys for a model whose on-chain manifest is not the keys' private manifest."""
    model = registry.get_model(model_id)
    if model.manifest_cid != keys.manifest_cid:
        raise KeyAccessError(
            f"model {model_id} ({model.name}) is registered with manifest {model.manifest_cid}, but these keys "
            f"belong to {keys.manifest_cid}: pass the key file of that model (or register the private manifest)"
        )


MAX_KEY_REQUEST_BYTES = 16 << 10  # a signed key request is a few hundred bytes


def make_keyholder_routes(registry: Registry, keys: FileKeys, model_id: int) -> list[web.RouteDef]:
    check_model(registry, keys, model_id)
    shards = AnnouncedShards(registry)

    async def post_keys(request: web.Request) -> web.Response:
        try:  # bounded size and depth first: a nested bomb must not reach the parser (RecursionError: 500)
            body = loads_limited(await request.read(), max_bytes=MAX_KEY_REQUEST_BYTES, max_depth=4)
        except BodyRejected as exc:
            return web.json_response({"error": str(exc)}, status=exc.status)
        try:
            req = KeyRequest.from_json(body)
        except (KeyAccessError, ValueError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        now = int(time.time())
        reason: str | None = None
        if req.manifest_cid != keys.manifest_cid or req.model_id != model_id:
            reason = f"this keyholder serves manifest {keys.manifest_cid} of model {model_id} only"
        elif not now <= req.expires <= now + 2 * REQUEST_TTL:
            reason = "the request has expired (or expires too far ahead): sign a fresh one"
        else:
            try:
                public = public_key_of(req)
                reason = await asyncio.to_thread(refusal, registry, req.address, model_id, shards)
            except KeyAccessError as exc:
                reason = str(exc)
        if reason is not None:
            log.warning("refused keys of %s to %s: %s", keys.manifest_cid, req.address, reason)
            return web.json_response({"error": f"refused: {reason}"}, status=403)
        log.info("wrapped keys of %s to %s (model %d)", keys.manifest_cid, req.address, model_id)
        return web.json_response(wrap_keys(keys, public, req.address))

    return [web.post(KEYS_PATH, post_keys)]


def request_keys(
    keyholder: str, private_key: bytes, manifest_cid: str, model_id: int, timeout: float = 30.0
) -> FileKeys:
    """As a worker: ask ``keyholder`` for the keys of ``manifest_cid`` and unwrap them with our key."""
    body = json.dumps(sign_request(private_key, manifest_cid, model_id).to_json()).encode()
    request = urllib.request.Request(keyholder.rstrip("/") + KEYS_PATH, data=body, method="POST")
    request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 (http(s) keyholder URL)
            envelope: dict[str, Any] = json.loads(response.read(1 << 20))
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace")[:400]
        raise KeyAccessError(f"keyholder {keyholder} answered {exc.code}: {detail}") from None
    except OSError as exc:
        raise KeyAccessError(f"cannot reach keyholder {keyholder}: {exc}") from None
    return unwrap_keys(envelope, private_key)


def run_keyholder(registry: Registry, keys: FileKeys, model_id: int, host: str, port: int) -> None:
    """Serve ``POST /v1/keys`` until interrupted (``shardnet keyholder run``)."""
    app = web.Application(client_max_size=64 << 10)
    app.add_routes(make_keyholder_routes(registry, keys, model_id))

    async def health(_: web.Request) -> web.Response:
        return web.json_response({"role": "keyholder", "manifest": keys.manifest_cid, "model_id": model_id})

    app.add_routes([web.get("/health", health)])
    log.info("keyholder for model %d (manifest %s) on http://%s:%d", model_id, keys.manifest_cid, host, port)
    web.run_app(app, host=host, port=port, print=None)
