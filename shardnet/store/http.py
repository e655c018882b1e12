"""Shard files over HTTP: the routes a worker mounts to serve its files, and the download client.

``GET /v1/shards/{cid}`` answers the file's bytes (``application/octet-stream``), 400 with a JSON error
for a malformed CID and 404 for a CID the store does not hold (or held corrupt: it is checked before
it is served, and quarantined when it does not match). The client streams a download into
the store's temporary file, hashing as it goes, and moves it into place only when the CID matches.
"""

from __future__ import annotations

import asyncio
import http.client
import logging
import time
import urllib.error
import urllib.request
from pathlib import Path

from aiohttp import web
from tqdm import tqdm

from shardnet.errors import IntegrityError, ShardnetError
from shardnet.store.cid import CHUNK_SIZE, CidHasher, cid_of_file, parse_cid
from shardnet.store.local import LocalStore

log = logging.getLogger(__name__)

SHARD_PATH = "/v1/shards/{cid}"
DEFAULT_TIMEOUT = 30.0
"""Seconds to wait for a peer to connect or send the next chunk."""
MIN_RATE = 64 << 10
"""Bytes per second below which a download of known size is given up (a peer dripping bytes cannot hold it)."""


class PeerError(ShardnetError):
    """A peer could not be reached, or does not have the file asked of it."""


QUARANTINE = ".quarantine"
"""Sub-folder of the store where a file that no longer matches its CID is moved (kept for inspection)."""


class VerifiedFiles:
    """Which store files were hashed and matched their CID, by (size, mtime): a file is re-hashed only when
    it changed. A mismatching file is moved to the store's `.quarantine` folder, so it is never served."""

    def __init__(self, store: LocalStore) -> None:
        self.store = store
        self._seen: dict[str, tuple[int, int]] = {}  # cid -> (size, mtime_ns) when it last matched
        self._locks: dict[str, asyncio.Lock] = {}

    async def check(self, cid: str) -> bool:
        """True when the store holds `cid` and its bytes hash to it (hashing in a thread when needed)."""
        path = self.store.root / cid
        lock = self._locks.setdefault(cid, asyncio.Lock())
        async with lock:  # concurrent requests for one file hash it once
            try:
                stat = path.stat()
            except FileNotFoundError:
                self._seen.pop(cid, None)
                return False
            key = (stat.st_size, stat.st_mtime_ns)
            if self._seen.get(cid) == key:
                return True
            got = await asyncio.to_thread(cid_of_file, path)
            if got == cid:
                self._seen[cid] = key
                return True
            self._seen.pop(cid, None)
            self._quarantine(path, cid, got)
            return False

    def _quarantine(self, path: Path, cid: str, got: str) -> None:
        folder = self.store.root / QUARANTINE
        folder.mkdir(exist_ok=True)
        try:
            path.replace(folder / cid)
        except FileNotFoundError:
            return
        log.error(
            "store file %s hashes to %s (corrupt): moved to %s, no longer served; fetch it again "
            "(shardnet store fetch or a worker restart)",
            cid,
            got,
            folder / cid,
        )


def make_shard_routes(store_dir: str | Path) -> list[web.RouteDef]:
    """aiohttp routes serving ``GET /v1/shards/{cid}`` (and HEAD) from the store folder ``store_dir``.

    A file is hashed before it is first served (and again whenever its size or mtime changes); one that
    does not match its CID is quarantined and answered 404, like a file the store does not hold."""
    store = LocalStore(store_dir)
    verified = VerifiedFiles(store)

    async def get_shard(request: web.Request) -> web.StreamResponse:
        text = request.match_info["cid"]
        try:
            cid = parse_cid(text)
        except ValueError as exc:
            return web.json_response({"error": f"{exc}; ask for a CIDv1 such as bafkrei…"}, status=400)
        path = store.root / cid
        if not path.is_file() or store.is_private(cid):  # a private model's plaintext is never served
            return web.json_response(
                {"error": f"this node does not hold {cid}; ask another peer that serves this model"},
                status=404,
            )
        if not await verified.check(cid):
            return web.json_response(
                {"error": f"this node's copy of {cid} was corrupt and is dropped; ask another peer"},
                status=404,
            )
        return web.FileResponse(path, headers={"Content-Type": "application/octet-stream"})

    return [web.get(SHARD_PATH, get_shard)]


def shard_url(peer: str, cid: str) -> str:
    """The URL of ``cid`` at the peer whose base URL is ``peer`` (e.g. http://127.0.0.1:8080)."""
    return peer.rstrip("/") + SHARD_PATH.format(cid=cid)


def download(
    peer: str,
    cid: str,
    store: LocalStore,
    *,
    expected_size: int | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    progress: bool = True,
    replace: bool = False,
    label: str | None = None,
    min_rate: float = MIN_RATE,
    headers: dict[str, str] | None = None,
) -> Path:
    """Download ``cid`` from ``peer`` into ``store`` and return its path there.

    A download of known size (``expected_size`` or the peer's Content-Length) must finish within
    ``timeout + size / min_rate`` seconds, or it is given up with ``PeerError`` (a slow drip is not a hang).

    ``label`` (e.g. the file's name in the manifest) names the progress bar; it defaults to the CID.
    ``headers`` go with the request (a signed read of a private piece, ``store.private.access``).

    The body is hashed while it streams into a temporary file; a body longer than ``expected_size``
    is cut off at once, and one whose size or CID does not match raises ``IntegrityError`` and leaves
    nothing in the store. An unreachable peer or a missing file raises ``PeerError``.
    """
    cid = parse_cid(cid)
    url = shard_url(peer, cid)
    started = time.monotonic()
    try:
        request = urllib.request.Request(url, headers=headers or {})
        response = urllib.request.urlopen(request, timeout=timeout)  # noqa: S310 (http(s) only, checked by caller)
    except urllib.error.HTTPError as exc:
        raise PeerError(f"{url} answered {exc.code} {exc.reason}") from exc
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        raise PeerError(f"cannot reach {peer}: {getattr(exc, 'reason', exc)}") from exc
    with response, store.incoming() as (f, tmp):
        hasher = CidHasher()
        total = expected_size if expected_size is not None else _content_length(response)
        bar = tqdm(
            total=total, unit="B", unit_scale=True, desc=label or cid[:16], disable=not progress, leave=False
        )
        deadline = None if total is None else started + timeout + total / min_rate
        try:
            while chunk := response.read1(CHUNK_SIZE):  # what has arrived: a drip is seen, not waited on
                if deadline is not None and time.monotonic() > deadline:
                    raise PeerError(
                        f"{url} sent {hasher.size + len(chunk)} of {total} bytes in "
                        f"{time.monotonic() - started:.0f} s, slower than {min_rate / 1024:.0f} KiB/s: given up"
                    )
                hasher.update(chunk)
                if expected_size is not None and hasher.size > expected_size:
                    raise IntegrityError(
                        f"{url} sent more than the {expected_size} bytes the manifest lists; "
                        "refused, nothing was stored"
                    )
                f.write(chunk)
                bar.update(len(chunk))
        except (OSError, http.client.HTTPException) as exc:  # timeouts, resets, short bodies
            raise PeerError(f"download of {url} broke off after {hasher.size} bytes: {exc!r}") from exc
        finally:
            bar.close()
        f.flush()
        announced = _content_length(response)
        if announced is not None and hasher.size < announced:
            raise PeerError(f"download of {url} broke off after {hasher.size} of {announced} bytes")
        if expected_size is not None and hasher.size != expected_size:
            raise IntegrityError(
                f"{url} sent {hasher.size} bytes, the manifest lists {expected_size} (truncated); "
                "refused, nothing was stored"
            )
        got = hasher.cid()
        if got != cid:
            raise IntegrityError(
                f"{url} sent content hashing to {got}, not {cid} (corrupt or substituted); "
                "refused, nothing was stored"
            )
        store.commit(tmp, cid, replace=replace)
    log.info("fetched %s (%d bytes) from %s", cid, hasher.size, peer)
    return store.root / cid


def _content_length(response: object) -> int | None:
    value = getattr(response, "headers", {}).get("Content-Length")
    return int(value) if value and value.isdigit() else None
