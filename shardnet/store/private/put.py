"""Seal a file or a folder into a store, place its pieces on distinct storage nodes, publish the manifest.

``put_private`` seals every file (``codec.seal_file``), uploads piece ``j`` of each file to node ``j``
(so no node holds two pieces of one file), uploads the manifest to every node, and returns the manifest
and the keys, which the caller saves apart (``keyfile.save_keys``).
"""

from __future__ import annotations

import http.client
import logging
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from shardnet.errors import ConfigError, ShardnetError
from shardnet.store.local import LocalStore
from shardnet.store.private.access import KIND_HEADER
from shardnet.store.private.codec import seal_file
from shardnet.store.private.keyfile import FileKeys
from shardnet.store.private.manifest import PrivateFile, PrivateManifest
from shardnet.store.private.node import PIECE_PATH

log = logging.getLogger(__name__)


class PlacementError(ShardnetError):
    """A piece could not be placed on its storage node."""


def files_of(path: Path) -> list[tuple[str, Path]]:
    """(relative name, path) of a file, or of every file under a folder (sorted; hidden files skipped)."""
    if path.is_file():
        return [(path.name, path)]
    if not path.is_dir():
        raise ConfigError(f"{path} is neither a file nor a folder")
    found = sorted(
        (p.relative_to(path).as_posix(), p)
        for p in path.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts)
    )
    if not found:
        raise ConfigError(f"folder {path} holds no files to store")
    return found


def upload_piece(node: str, cid: str, source: Path, timeout: float = 60.0, *, manifest: bool = False) -> None:
    """PUT the file ``source`` to ``node`` under ``cid`` (the node checks the CID before keeping it)."""
    url = node.rstrip("/") + PIECE_PATH.format(cid=cid)
    with open(source, "rb") as body:
        request = urllib.request.Request(url, data=body, method="PUT")
        request.add_header("Content-Length", str(source.stat().st_size))
        request.add_header("Content-Type", "application/octet-stream")
        if manifest:  # readable by anyone; a piece is served only to readers where the node has a list
            request.add_header(KIND_HEADER, "manifest")
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 (http(s) checked)
                response.read()
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")[:300]
            raise PlacementError(f"storage node {node} refused piece {cid}: {exc.code} {detail}") from exc
        except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
            raise PlacementError(
                f"cannot reach storage node {node} to place {cid}: {exc}; is it running?"
            ) from exc


def check_nodes(nodes: Sequence[str], n: int) -> list[str]:
    """Distinct http(s) base URLs, at least n of them (or none: the pieces then stay in the local store)."""
    nodes = [u.rstrip("/") for u in nodes]
    bad = [u for u in nodes if not u.startswith(("http://", "https://"))]
    if bad:
        raise ConfigError(f"storage node {bad[0]!r} is not a http(s):// base URL")
    if len(set(nodes)) != len(nodes):
        raise ConfigError("a storage node is listed twice: pieces of one file must go to distinct nodes")
    if nodes and len(nodes) < n:
        raise ConfigError(
            f"{len(nodes)} storage nodes given for n={n} pieces: give at least {n} distinct --node URLs (or lower --n)"
        )
    return nodes


def put_private(
    source: Path,
    store_dir: Path,
    *,
    n: int = 6,
    k: int = 4,
    nodes: Sequence[str] = (),
    name: str | None = None,
    on_bytes: Callable[[int], None] | None = None,
) -> tuple[PrivateManifest, FileKeys]:
    """Seal ``source`` (a file or folder) into ``store_dir``, place the pieces, and return manifest and keys."""
    return put_files(
        files_of(source), store_dir, n=n, k=k, nodes=nodes, name=name or source.name, on_bytes=on_bytes
    )


def put_files(
    files: Sequence[tuple[str, Path]],
    store_dir: Path,
    *,
    n: int,
    k: int,
    nodes: Sequence[str],
    name: str,
    on_bytes: Callable[[int], None] | None = None,
) -> tuple[PrivateManifest, FileKeys]:
    """Seal each (name, path), place the pieces on ``nodes`` (piece j on node j), publish the manifest there."""
    nodes = check_nodes(nodes, n)
    store = LocalStore(store_dir).ensure()
    entries: list[PrivateFile] = []
    keys: dict[str, bytes] = {}
    for rel, path in files:
        sealed, key = seal_file(path, store, n, k, on_bytes=on_bytes)
        holders = {p.index: (nodes[p.index],) for p in sealed.pieces} if nodes else {}
        if nodes:
            with ThreadPoolExecutor(max_workers=n) as pool:
                list(
                    pool.map(lambda p: upload_piece(nodes[p.index], p.cid, store.root / p.cid), sealed.pieces)
                )
        entries.append(PrivateFile.from_sealed(rel, sealed, holders))
        keys[rel] = key
        log.info(
            "sealed %s: %d bytes into %d pieces of %d bytes (any %d rebuild)",
            rel,
            sealed.size,
            n,
            sealed.pieces[0].size,
            k,
        )
    manifest = PrivateManifest(name, tuple(entries))
    cid = store.put_bytes(manifest.to_json_bytes())
    for node in nodes:
        upload_piece(node, cid, store.root / cid, manifest=True)
    return manifest, FileKeys(cid, keys)
