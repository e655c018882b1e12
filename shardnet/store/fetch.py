"""Fetch exactly the files a layer span needs, from local folders or HTTP peers, verifying every CID.

A source is either a store folder (files named by CID) or the base URL of a peer serving
``GET /v1/shards/{cid}`` (any worker). For each file the sources are tried in order; a source that is
unreachable, lacks the file, or sends bytes that do not match the CID is skipped for that file and
the next one is tried. Nothing unverified ever enters the store.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from shardnet.errors import IntegrityError, ShardnetError
from shardnet.span import LayerSpan
from shardnet.store.cid import cid_of_file, parse_cid
from shardnet.store.http import DEFAULT_TIMEOUT, PeerError, download
from shardnet.store.local import LocalStore
from shardnet.store.manifest import Manifest, load_manifest

log = logging.getLogger(__name__)


class FetchError(ShardnetError):
    """No source could deliver a file; the message lists what each source answered."""


@dataclass(frozen=True)
class Source:
    """Where files come from: a store folder or an HTTP peer."""

    location: str

    @property
    def is_http(self) -> bool:
        return self.location.startswith(("http://", "https://"))

    def __str__(self) -> str:
        return self.location


def as_sources(source: str | Path | Sequence[str | Path]) -> list[Source]:
    """Normalize one source or a list of them; a URL other than http(s):// is refused."""
    items = [source] if isinstance(source, str | Path) else list(source)
    if not items:
        raise FetchError("no source given: pass a store folder or a peer URL (http://host:port)")
    sources = [Source(str(s)) for s in items]
    for src in sources:
        if "://" in src.location and not src.is_http:
            raise FetchError(
                f"source {src.location!r} is neither a store folder nor an http(s):// peer URL; "
                "give a folder holding files by CID or a worker's base URL such as http://host:port"
            )
    return sources


def _fetch_one(
    cid: str,
    size: int | None,
    sources: list[Source],
    store: LocalStore,
    *,
    replace: bool,
    progress: bool,
    timeout: float,
    label: str,
) -> Path:
    what = f"{label} ({cid})"
    failures: list[str] = []
    integrity = False
    for src in sources:
        try:
            if src.is_http:
                return download(
                    src.location,
                    cid,
                    store,
                    expected_size=size,
                    timeout=timeout,
                    progress=progress,
                    replace=replace,
                    label=label,
                )
            path = Path(src.location) / cid
            if not path.is_file():
                raise PeerError(f"folder {src.location} has no file {cid}")
            if path.resolve() == (store.root / cid).resolve():
                raise PeerError(f"folder {src.location} is the store itself")
            with open(path, "rb") as f:
                store.put_stream(
                    f, expected_cid=cid, expected_size=size, label=label, replace=replace, progress=progress
                )
            log.info("copied %s from %s", what, src)
            return store.root / cid
        except IntegrityError as exc:
            integrity = True
            failures.append(f"{src}: {exc}")
            log.warning("refused %s from %s: %s", what, src, exc)
        except (PeerError, OSError) as exc:
            failures.append(f"{src}: {exc}")
            log.info("%s unavailable from %s: %s", what, src, exc)
    detail = "\n  ".join(failures)
    if integrity:
        raise IntegrityError(
            f"no source delivered a verified copy of {what}; nothing was stored:\n  {detail}\n"
            "use another peer or republish the model"
        )
    raise FetchError(
        f"no source could deliver {what}:\n  {detail}\nadd a source that holds this model (--from)"
    )


def _ensure(
    cid: str,
    size: int | None,
    sources: list[Source],
    store: LocalStore,
    progress: bool,
    timeout: float,
    label: str,
) -> Path:
    path = store.path(cid)
    if path.is_file():
        if (size is None or path.stat().st_size == size) and cid_of_file(path) == cid:
            log.debug("store already holds a verified %s (%s)", label, cid)
            return path
        log.warning("stored copy of %s (%s) is corrupt; fetching it again", label, cid)
        return _fetch_one(
            cid, size, sources, store, replace=True, progress=progress, timeout=timeout, label=label
        )
    return _fetch_one(
        cid, size, sources, store, replace=False, progress=progress, timeout=timeout, label=label
    )


def ensure_file(
    cid: str,
    source: str | Path | Sequence[str | Path],
    store_dir: str | Path,
    *,
    size: int | None = None,
    label: str | None = None,
    progress: bool = False,
    timeout: float = DEFAULT_TIMEOUT,
) -> Path:
    """The path of a verified copy of ``cid`` in ``store_dir``, for a single file (a tokenizer, a manifest).

    A copy already in the store is re-hashed and kept when it matches (then ``source`` may be empty);
    a missing or corrupt one is fetched from ``source`` (folders and peer URLs, tried in order) and
    verified before it enters the store. Raises ``IntegrityError`` when only corrupt copies were found,
    ``FetchError`` when no source had the file.
    """
    try:
        cid = parse_cid(cid)
    except ValueError as exc:
        raise FetchError(f"{label or 'file'}: {exc}") from None
    store = LocalStore(store_dir).ensure()
    path = store.root / cid
    if path.is_file() and (size is None or path.stat().st_size == size) and cid_of_file(path) == cid:
        return path
    sources = as_sources(source) if (isinstance(source, str | Path) or source) else []
    if not sources:
        raise FetchError(
            f"{label or cid} ({cid}) is not in the store {store.root} (or its copy is corrupt) and no "
            "source was given: pass a store folder or a peer URL that holds it"
        )
    return _ensure(cid, size, sources, store, progress, timeout, label or cid)


def fetch_files(
    manifest_cid: str,
    span: LayerSpan | str,
    source: str | Path | Sequence[str | Path],
    store_dir: str | Path,
    *,
    progress: bool = True,
    timeout: float = DEFAULT_TIMEOUT,
) -> Manifest:
    """Bring into ``store_dir`` the manifest and exactly the files that serving ``span`` needs.

    That is the span's layer files, the embedding file if the span starts at layer 0, the head file
    if it ends at the last layer, and the tokenizer files. Files already in the store are re-hashed
    and kept when they verify. Returns the manifest. Raises ``IntegrityError`` when only corrupt
    copies were found, ``FetchError`` when no source had a file.
    """
    span = LayerSpan.parse(span) if isinstance(span, str) else span
    try:
        manifest_cid = parse_cid(manifest_cid)
    except ValueError as exc:
        raise FetchError(
            f"manifest CID: {exc}; give the CID that `shardnet model import` printed "
            "(or that the model has on chain), e.g. bafkrei…"
        ) from None
    sources = as_sources(source)
    store = LocalStore(store_dir).ensure()
    _ensure(manifest_cid, None, sources, store, progress, timeout, "manifest")
    manifest = load_manifest(store.root, manifest_cid)
    wanted = [(f.cid, f.size, f.name) for f in manifest.files_for(span)] + [
        (t.cid, t.size, t.name) for t in manifest.tokenizer
    ]
    missing = [w for w in wanted if not store.has(w[0])]
    log.info(
        "%s layers %s needs %d files (%.1f MB), %d not in %s yet",
        manifest.name,
        span,
        len(wanted),
        sum(w[1] for w in wanted) / 1e6,
        len(missing),
        store.root,
    )
    for cid, size, name in wanted:
        _ensure(cid, size, sources, store, progress, timeout, name)
    log.info(
        "store %s holds the %d files of %s layers %s (manifest %s)",
        store.root,
        len(wanted),
        manifest.name,
        span,
        manifest_cid,
    )
    return manifest
