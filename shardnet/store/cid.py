"""Content identifiers: the one place in shardnet that makes and checks CIDs.

A shardnet CID is a CIDv1 with the ``raw`` codec and a sha2-256 multihash, written as a base32 string
(``bafkrei…``), as IPFS writes raw blocks. Files are hashed in a stream, so a large shard never has to
fit in memory.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path

from multiformats import CID, multihash

from shardnet.errors import IntegrityError

CHUNK_SIZE = 1 << 20
"""Bytes read at a time when hashing a file or a stream."""

_CODEC = "raw"
_HASH = "sha2-256"


def _cid_of_digest(digest: bytes) -> str:
    return str(CID("base32", 1, _CODEC, multihash.wrap(digest, _HASH)))


def cid_of_bytes(data: bytes) -> str:
    """The CID (base32 string) of ``data``."""
    return _cid_of_digest(hashlib.sha256(data).digest())


def cid_of_chunks(chunks: Iterable[bytes]) -> str:
    """The CID of the concatenation of ``chunks``, hashed as they come."""
    h = hashlib.sha256()
    for chunk in chunks:
        h.update(chunk)
    return _cid_of_digest(h.digest())


def cid_of_file(path: str | Path) -> str:
    """The CID of the file at ``path``, read in chunks of ``CHUNK_SIZE``."""
    with open(path, "rb") as f:
        return cid_of_chunks(iter(lambda: f.read(CHUNK_SIZE), b""))


class CidHasher:
    """Hashes a stream piece by piece; ``cid()`` gives the CID of everything fed so far."""

    def __init__(self) -> None:
        self._h = hashlib.sha256()
        self.size = 0

    def update(self, chunk: bytes) -> None:
        self._h.update(chunk)
        self.size += len(chunk)

    def cid(self) -> str:
        return _cid_of_digest(self._h.digest())


def parse_cid(text: str) -> str:
    """Check that ``text`` is a shardnet CID (CIDv1, raw, sha2-256) and return it in canonical base32.

    Raises ``ValueError`` with a clear message otherwise; a store path is only ever built from a CID
    that passed this check, so a crafted name like ``../x`` can never reach the file system.
    """
    if not isinstance(text, str) or not text or len(text) > 200:
        raise ValueError(f"not a CID: {text!r}")
    try:
        cid = CID.decode(text)
    except Exception as exc:  # multiformats raises several types for malformed input
        raise ValueError(f"not a CID: {text!r} ({exc})") from exc
    if cid.version != 1 or cid.codec.name != _CODEC or cid.hashfun.name != _HASH:
        raise ValueError(
            f"unsupported CID {text!r}: shardnet uses CIDv1, raw codec, sha2-256 "
            f"(got v{cid.version}, {cid.codec.name}, {cid.hashfun.name})"
        )
    canonical = str(cid.set(base="base32"))
    return canonical


def is_cid(text: str) -> bool:
    """True when ``text`` is a valid shardnet CID string."""
    try:
        parse_cid(text)
    except ValueError:
        return False
    return True


def verify_cid(data_or_path: bytes | str | Path, expected: str) -> None:
    """Raise ``IntegrityError`` unless the bytes (or the file at a path) hash to ``expected``."""
    actual = cid_of_bytes(data_or_path) if isinstance(data_or_path, bytes) else cid_of_file(data_or_path)
    if actual != expected:
        what = "data" if isinstance(data_or_path, bytes) else str(data_or_path)
        raise IntegrityError(
            f"{what} does not match its CID: expected {expected}, got {actual}; "
            "the copy is corrupt or was substituted, fetch it again from another source"
        )
