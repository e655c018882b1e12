"""A storage node's HTTP routes: hold pieces by CID, accept uploads, answer spot checks.

- ``GET /v1/shards/{cid}``: the piece's bytes (the same route and checks as a worker's shard files).
- ``PUT /v1/pieces/{cid}``: store an uploaded piece; the body streams into a temporary file, is hashed,
  and becomes visible only when it matches the CID (400 otherwise). Bodies over ``max_bytes`` are refused.
- ``GET /v1/pieces/{cid}/segment/{index}``: Merkle leaf ``index`` of the piece with its proof, as JSON
  (``segment`` and ``proof`` in hex), for spot checks and on-chain challenge answers.

A worker mounts the same routes (``make_piece_routes``); ``shardnet store serve`` runs them alone for nodes
that store but do not compute.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections import OrderedDict
from pathlib import Path

from aiohttp import web

from shardnet.store.cid import CHUNK_SIZE, CidHasher, parse_cid
from shardnet.store.http import SHARD_PATH, make_shard_routes
from shardnet.store.local import LocalStore
from shardnet.store.private.access import KIND_HEADER, ReadRefused, check_read
from shardnet.store.private.merkle import leaf_hashes, merkle_proof, read_segment

log = logging.getLogger(__name__)

PIECE_PATH = "/v1/pieces/{cid}"
SEGMENT_PATH = "/v1/pieces/{cid}/segment/{index}"
DEFAULT_MAX_PIECE_BYTES = 4 << 30
LEAF_CACHE_PIECES = 64
"""Pieces whose leaf hashes the segment route keeps (a 1 GiB piece's are 32 MiB)."""
PIECES_DIR = ".pieces"
"""Markers of the uploads that are pieces (not manifests): with a reader list, only readers get these."""


def _error(message: str, status: int) -> web.Response:
    return web.json_response({"error": message}, status=status)


def held_bytes(store_dir: str | Path) -> int:
    """Bytes of the files directly in the store folder (pieces, manifests, unfinished uploads)."""
    return sum(p.stat().st_size for p in Path(store_dir).iterdir() if p.is_file())


def make_piece_routes(
    store_dir: str | Path,
    max_bytes: int = DEFAULT_MAX_PIECE_BYTES,
    max_store_bytes: int | None = None,
    readers: frozenset[str] | None = None,
) -> list[web.RouteDef]:
    """Routes of a storage node over the store folder ``store_dir`` (the shard GET route included).

    Uploads are unauthenticated, so with ``max_store_bytes`` the bytes held plus the bytes of uploads in
    flight never exceed it (507 otherwise): a stranger cannot fill the disk. With ``readers`` (checksum
    addresses), a piece's bytes and segments go only to reads signed by one of them (``access.py``): 403."""
    store = LocalStore(store_dir).ensure()
    markers = store.root / PIECES_DIR
    markers.mkdir(exist_ok=True)
    shard_get = make_shard_routes(store.root)[0].handler

    def refused(request: web.Request, cid: str) -> web.Response | None:
        if readers is None or not (markers / cid).exists():
            return None
        try:
            check_read(request.headers, cid, request.host, readers)
        except ReadRefused as exc:
            return _error(str(exc), 403)
        return None

    async def get_shard(request: web.Request) -> web.StreamResponse:
        try:
            cid = parse_cid(request.match_info["cid"])
        except ValueError:
            return await shard_get(request)  # its own 400
        return refused(request, cid) or await shard_get(request)

    leaf_cache: OrderedDict[str, list[bytes]] = OrderedDict()  # least recently used first
    used = [held_bytes(store.root)]  # held + in flight, counted as they arrive

    def full(extra: int) -> web.Response | None:
        if max_store_bytes is not None and used[0] + extra > max_store_bytes:
            return _error(
                f"this node's store is full ({used[0]} of {max_store_bytes} bytes held or arriving): "
                "place the piece on another node",
                507,
            )
        return None

    async def put_piece(request: web.Request) -> web.Response:
        try:
            cid = parse_cid(request.match_info["cid"])
        except ValueError as exc:
            return _error(f"{exc}; upload under the piece's CID (bafkrei…)", 400)
        if store.has(cid):
            await request.release()
            return web.json_response({"cid": cid, "stored": "already held"})
        length = request.content_length
        if length is not None and length > max_bytes:
            return _error(f"piece of {length} bytes exceeds this node's limit of {max_bytes}", 413)
        if (refused := full(length or 0)) is not None:
            return refused
        hasher = CidHasher()
        stored = False
        try:
            with store.incoming() as (f, tmp):
                while chunk := await request.content.read(CHUNK_SIZE):
                    if (refused := full(len(chunk))) is not None:
                        return refused
                    used[0] += len(chunk)
                    hasher.update(chunk)
                    if hasher.size > max_bytes:
                        return _error(f"piece exceeds this node's limit of {max_bytes} bytes", 413)
                    f.write(chunk)
                f.flush()
                os.fsync(f.fileno())
                got = hasher.cid()
                if got != cid:
                    return _error(f"uploaded bytes hash to {got}, not {cid}: refused, nothing stored", 400)
                if store.has(cid):  # an upload of the same piece finished meanwhile
                    return web.json_response({"cid": cid, "stored": "already held"})
                if request.headers.get(KIND_HEADER) != "manifest":
                    (markers / cid).touch()
                store.commit(tmp, cid)
                stored = True
        finally:
            if not stored:  # nothing kept: its bytes no longer count
                used[0] -= hasher.size
        log.info("stored piece %s (%d bytes)", cid, hasher.size)
        return web.json_response({"cid": cid, "stored": hasher.size})

    async def get_segment(request: web.Request) -> web.Response:
        try:
            cid = parse_cid(request.match_info["cid"])
            index = int(request.match_info["index"])
        except ValueError as exc:
            return _error(f"bad request: {exc}", 400)
        if (denied := refused(request, cid)) is not None:
            return denied
        path = store.root / cid
        if not path.is_file():
            return _error(f"this node does not hold {cid}", 404)
        leaves = leaf_cache.get(cid)
        if leaves is None:
            leaves = await asyncio.to_thread(leaf_hashes, path)
            leaf_cache[cid] = leaves
            while len(leaf_cache) > LEAF_CACHE_PIECES:  # 32 bytes per KiB held: bound it
                leaf_cache.popitem(last=False)
        leaf_cache.move_to_end(cid)
        if not 0 <= index < len(leaves):
            return _error(f"segment {index} is outside 0..{len(leaves) - 1}", 400)
        segment = await asyncio.to_thread(read_segment, path, index)
        proof = merkle_proof(leaves, index)
        return web.json_response(
            {"cid": cid, "index": index, "segment": segment.hex(), "proof": [p.hex() for p in proof]}
        )

    return [
        web.get(SHARD_PATH, get_shard),
        web.put(PIECE_PATH, put_piece),
        web.get(SEGMENT_PATH, get_segment),
    ]


def run_storage_node(
    store_dir: str | Path,
    host: str,
    port: int,
    max_bytes: int = DEFAULT_MAX_PIECE_BYTES,
    max_store_bytes: int | None = None,
    readers: frozenset[str] | None = None,
) -> None:
    """Serve the store folder as a storage node until interrupted (``shardnet store serve``)."""
    app = web.Application(client_max_size=1 << 20)
    app.add_routes(make_piece_routes(store_dir, max_bytes, max_store_bytes, readers))

    async def health(_: web.Request) -> web.Response:
        return web.json_response({"role": "storage", "store": str(store_dir)})

    app.add_routes([web.get("/health", health)])
    log.info("storage node serving %s on http://%s:%d", store_dir, host, port)
    web.run_app(app, host=host, port=port, print=None, handle_signals=True)
