"""Fetch a private manifest's files back: any k verified pieces from the fastest holders, rebuilt and decrypted.

For each file the holders are probed in parallel (``HEAD /v1/shards/{cid}``) and ordered by how fast they
answer; k downloads run in parallel from the fastest, and every failure (unreachable, missing, wrong bytes)
starts the next candidate. Each piece is checked against its CID and size before it is used. The plaintext
goes to a temporary file beside the destination, is checked against the manifest's sha256, and only then
renamed into place: a failed retrieval leaves nothing behind.
"""

from __future__ import annotations

import http.client
import logging
import os
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING

from shardnet.errors import IntegrityError, ShardnetError
from shardnet.store.cid import cid_of_file
from shardnet.store.fetch import ensure_file
from shardnet.store.http import DEFAULT_TIMEOUT, PeerError, download, shard_url
from shardnet.store.local import LocalStore
from shardnet.store.private.access import sign_read
from shardnet.store.private.codec import open_pieces
from shardnet.store.private.keyfile import FileKeys
from shardnet.store.private.manifest import PieceEntry, PrivateFile, PrivateManifest

if TYPE_CHECKING:
    from eth_account.signers.local import LocalAccount

log = logging.getLogger(__name__)


class MissingPiecesError(ShardnetError):
    """Fewer than k pieces of a file could be fetched; the message names each missing piece and why."""


def load_private_manifest(
    manifest_cid: str, sources: Sequence[str], store_dir: Path, timeout: float = DEFAULT_TIMEOUT
) -> PrivateManifest:
    """The private manifest ``manifest_cid``, from the store or the first source that has it (CID-checked)."""
    path = ensure_file(manifest_cid, list(sources), store_dir, label="private manifest", timeout=timeout)
    return PrivateManifest.from_json(path.read_bytes())


def _signed(reader: LocalAccount | None, holder: str, cid: str) -> dict[str, str]:
    return {} if reader is None else sign_read(reader, holder, cid)


def _probe(url: str, timeout: float, headers: dict[str, str]) -> float:
    start = time.monotonic()
    request = urllib.request.Request(url, method="HEAD", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 (http(s) only)
            response.read()
    except (urllib.error.URLError, OSError, http.client.HTTPException):
        return float("inf")
    return time.monotonic() - start


def _candidates(
    f: PrivateFile, extra: Sequence[str], timeout: float, reader: LocalAccount | None
) -> list[tuple[float, PieceEntry, str]]:
    """(answer time, piece, holder) for every piece at every holder (its own and the extra sources), fastest first."""
    pairs = [(p, h) for p in f.pieces for h in dict.fromkeys([*p.holders, *extra])]
    with ThreadPoolExecutor(max_workers=max(1, min(16, len(pairs)))) as pool:
        times = list(
            pool.map(
                lambda ph: _probe(shard_url(ph[1], ph[0].cid), timeout, _signed(reader, ph[1], ph[0].cid)),
                pairs,
            )
        )
    ranked = sorted(zip(times, range(len(pairs)), pairs, strict=True))
    return [(t, p, h) for t, _, (p, h) in ranked]


def _fetch_piece(
    piece: PieceEntry, holder: str, store: LocalStore, timeout: float, reader: LocalAccount | None
) -> Path:
    return download(
        holder,
        piece.cid,
        store,
        expected_size=piece.size,
        timeout=timeout,
        progress=False,
        label=f"piece {piece.index}",
        headers=_signed(reader, holder, piece.cid),
    )


def gather_pieces(
    f: PrivateFile,
    store: LocalStore,
    extra: Sequence[str] = (),
    timeout: float = DEFAULT_TIMEOUT,
    reader: LocalAccount | None = None,
) -> dict[int, Path]:
    """Paths of k verified pieces of ``f`` in ``store`` (pieces already there are re-hashed and reused).

    With ``reader``, every request is signed by that key, for nodes that serve pieces only to readers."""
    have: dict[int, Path] = {}
    for p in f.pieces:
        path = store.root / p.cid
        if path.is_file() and path.stat().st_size == p.size and cid_of_file(path) == p.cid:
            have[p.index] = path
        if len(have) == f.k:
            return have
    failures: dict[int, list[str]] = {p.index: [] for p in f.pieces if p.index not in have}
    queue = [(p, h) for t, p, h in _candidates(f, extra, timeout, reader) if p.index not in have]
    for p in f.pieces:
        if p.index in failures and not any(q[0].index == p.index for q in queue):
            failures[p.index].append("no holder listed")
    running: dict[Future[Path], tuple[PieceEntry, str]] = {}
    with ThreadPoolExecutor(max_workers=f.n) as pool:
        while len(have) < f.k and (queue or running):
            busy = {pe.index for pe, _ in running.values()}
            while queue and len(running) < f.k - len(have):
                i = next(
                    (i for i, (p, _) in enumerate(queue) if p.index not in have and p.index not in busy), None
                )
                if i is None:
                    break
                p, h = queue.pop(i)
                busy.add(p.index)
                running[pool.submit(_fetch_piece, p, h, store, timeout, reader)] = (p, h)
            if not running:
                break
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for fut in done:
                p, h = running.pop(fut)
                try:
                    have[p.index] = fut.result()
                    failures.pop(p.index, None)
                except (PeerError, IntegrityError, OSError) as exc:
                    failures.setdefault(p.index, []).append(f"{h}: {exc}")
                    log.warning("piece %d of %s from %s failed: %s", p.index, f.name, h, exc)
    if len(have) < f.k:
        missing = "\n  ".join(
            f"piece {i} ({f.pieces[i].cid}): {'; '.join(why) or 'not tried'}"
            for i, why in sorted(failures.items())
            if i not in have
        )
        raise MissingPiecesError(
            f"{f.name}: only {len(have)} of the {f.k} pieces needed could be fetched "
            f"({f.n - len(have)} of {f.n} unavailable):\n  {missing}\n"
            "bring a holder back online or add a source holding the pieces (--from)"
        )
    for i in [i for i in sorted(have)][f.k :]:
        have.pop(i)
    return have


def restore_file(
    f: PrivateFile,
    pieces: dict[int, Path],
    key: bytes,
    dest: Path,
    on_bytes: Callable[[int], None] | None = None,
) -> Path:
    """Rebuild and decrypt ``f`` into ``dest`` via a temporary file and a rename (never a partial file)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=".tmp-", dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out, ExitStack() as stack:
            handles = {i: stack.enter_context(open(p, "rb")) for i, p in pieces.items()}
            open_pieces(
                f.size,
                f.sha256,
                f.k,
                f.n,
                handles,
                key,
                out,
                chunk_size=f.chunk_size,
                label=f.name,
                on_bytes=on_bytes,
            )
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def get_private(
    manifest_cid: str,
    keys: FileKeys,
    out_dir: Path,
    store_dir: Path,
    *,
    sources: Sequence[str] = (),
    timeout: float = DEFAULT_TIMEOUT,
    on_bytes: Callable[[int], None] | None = None,
    reader: LocalAccount | None = None,
) -> tuple[PrivateManifest, list[Path]]:
    """Fetch, verify, rebuild and decrypt every file of ``manifest_cid`` into ``out_dir``."""
    manifest = load_private_manifest(manifest_cid, sources, store_dir, timeout)
    store = LocalStore(store_dir).ensure()
    peers = [s for s in sources if s.startswith(("http://", "https://"))]
    written = []
    for f in manifest.files:
        pieces = gather_pieces(f, store, peers, timeout, reader)
        written.append(restore_file(f, pieces, keys.key(f.name), out_dir / f.name, on_bytes))
    return manifest, written
