"""The private manifest: the pieces of each sealed file, where they are, and how to rebuild it. Never a key.

Format ``shardnet-private/1``, canonical JSON like the model manifest; its CID is the handle a reader
passes to ``shardnet store get``. Per file: its relative name, plaintext size and sha256, the chunk size,
n and k, and per piece its index, CID, size, Merkle root (hex) and leaf count, and the base URLs of the
storage nodes it was placed on. ``from_json`` checks everything a reader relies on, so a manifest whose
pieces disagree with it (a size that n, k and the file size do not give) is refused before any download.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from shardnet.store.cid import cid_of_bytes, parse_cid
from shardnet.store.manifest import ManifestError, canonical_json
from shardnet.store.private.codec import CHUNK_SIZE, SealedFile, check_params, piece_size
from shardnet.store.private.merkle import LEAF_SIZE

PRIVATE_FORMAT = "shardnet-private/1"
MAX_FILE_SIZE = 1 << 44
"""Largest plaintext a manifest may list (16 TiB): a larger size is a hostile manifest, refused before any download."""


@dataclass(frozen=True)
class PieceEntry:
    index: int
    cid: str
    size: int
    merkle_root: str
    leaves: int
    holders: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "cid": self.cid,
            "size": self.size,
            "merkle_root": self.merkle_root,
            "leaves": self.leaves,
            "holders": list(self.holders),
        }


@dataclass(frozen=True)
class PrivateFile:
    name: str
    size: int
    sha256: str
    chunk_size: int
    n: int
    k: int
    pieces: tuple[PieceEntry, ...]

    @classmethod
    def from_sealed(
        cls, name: str, sealed: SealedFile, holders: Mapping[int, tuple[str, ...]]
    ) -> PrivateFile:
        pieces = tuple(
            PieceEntry(p.index, p.cid, p.size, p.merkle_root.hex(), p.leaves, holders.get(p.index, ()))
            for p in sealed.pieces
        )
        return cls(name, sealed.size, sealed.sha256, sealed.chunk_size, sealed.n, sealed.k, pieces)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "size": self.size,
            "sha256": self.sha256,
            "chunk_size": self.chunk_size,
            "n": self.n,
            "k": self.k,
            "pieces": [p.to_json() for p in self.pieces],
        }


@dataclass(frozen=True)
class PrivateManifest:
    name: str
    files: tuple[PrivateFile, ...]
    format: str = PRIVATE_FORMAT

    def to_json(self) -> dict[str, Any]:
        return {"format": self.format, "name": self.name, "files": [f.to_json() for f in self.files]}

    def to_json_bytes(self) -> bytes:
        return canonical_json(self.to_json())

    @property
    def cid(self) -> str:
        return cid_of_bytes(self.to_json_bytes())

    def file(self, name: str) -> PrivateFile:
        for f in self.files:
            if f.name == name:
                return f
        raise ManifestError(
            f"private manifest {self.name!r} has no file {name!r}; it has {[f.name for f in self.files]}"
        )

    @classmethod
    def from_json(cls, data: bytes | str | dict[str, Any]) -> PrivateManifest:
        """Parse and check; raises ``ManifestError`` naming the first problem."""
        try:
            obj = json.loads(data) if isinstance(data, bytes | str) else data
            return _parse(obj)
        except ManifestError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ManifestError(f"private manifest is malformed: {type(exc).__name__}: {exc}") from exc


def _need(cond: bool, message: str) -> None:
    if not cond:
        raise ManifestError(message)


def _safe_name(name: Any) -> str:
    _need(isinstance(name, str) and bool(name), f"file name {name!r} must be a non-empty string")
    path = PurePosixPath(name)
    _need(
        not path.is_absolute()
        and ".." not in path.parts
        and "\\" not in name
        and "\x00" not in name
        and bool(path.parts)
        and str(path) == name,  # canonical: no '.', '//' or trailing '/' (two names, one file)
        f"file name {name!r} must be a canonical relative path without '..', '.', '//' or NUL",
    )
    return str(name)


def _parse_file(f: dict[str, Any]) -> PrivateFile:
    name = _safe_name(f["name"])
    n, k, size, chunk = int(f["n"]), int(f["k"]), int(f["size"]), int(f["chunk_size"])
    try:
        check_params(n, k)
    except Exception as exc:
        raise ManifestError(f"file {name!r}: {exc}") from None
    _need(
        0 <= size <= MAX_FILE_SIZE and chunk > 0,
        f"file {name!r}: size must be within 0..{MAX_FILE_SIZE} and chunk_size positive",
    )
    _need(chunk == CHUNK_SIZE, f"file {name!r}: chunk size {chunk} is not this version's {CHUNK_SIZE}")
    sha = str(f["sha256"])
    _need(
        len(sha) == 64 and all(c in "0123456789abcdef" for c in sha),
        f"file {name!r}: sha256 must be 64 hex digits",
    )
    expected = piece_size(size, k, chunk)
    leaves = max(1, -(-expected // LEAF_SIZE))
    pieces = []
    for p in f["pieces"]:
        holders = tuple(str(h) for h in p.get("holders", []))
        _need(
            all(h.startswith(("http://", "https://")) for h in holders),
            f"file {name!r}: a holder is not a http(s) URL",
        )
        entry = PieceEntry(
            int(p["index"]),
            parse_cid(p["cid"]),
            int(p["size"]),
            str(p["merkle_root"]),
            int(p["leaves"]),
            holders,
        )
        _need(0 <= entry.index < n, f"file {name!r}: piece index {entry.index} is outside 0..{n - 1}")
        _need(
            entry.size == expected,
            f"file {name!r}: piece {entry.index} is listed with {entry.size} bytes, but a {size}-byte file "
            f"with k={k} gives pieces of {expected} bytes: the manifest disagrees with its pieces",
        )
        _need(
            entry.leaves == leaves,
            f"file {name!r}: piece {entry.index} lists {entry.leaves} Merkle leaves, expected {leaves}",
        )
        _need(
            len(bytes.fromhex(entry.merkle_root)) == 32,
            f"file {name!r}: piece {entry.index} Merkle root is not 32 bytes",
        )
        pieces.append(entry)
    _need(
        sorted(p.index for p in pieces) == list(range(n)),
        f"file {name!r}: pieces must be exactly indices 0..{n - 1}",
    )
    _need(len({p.cid for p in pieces}) == n or size == 0, f"file {name!r}: two pieces share a CID")
    return PrivateFile(name, size, sha, chunk, n, k, tuple(sorted(pieces, key=lambda p: p.index)))


def _parse(d: Any) -> PrivateManifest:
    _need(isinstance(d, dict), "private manifest must be a JSON object")
    _need(
        d.get("format") == PRIVATE_FORMAT,
        f"manifest format is {d.get('format')!r}, expected {PRIVATE_FORMAT!r} (is this a model manifest? use `shardnet model fetch`)",
    )
    _need(isinstance(d.get("name"), str), "private manifest field 'name' must be a string")
    _need(
        isinstance(d.get("files"), list) and bool(d["files"]),
        "private manifest field 'files' must be a non-empty list",
    )
    files = tuple(_parse_file(f) for f in d["files"])
    _need(len({f.name for f in files}) == len(files), "private manifest lists a file name twice")
    _need(
        not any(set(d) - {"format", "name", "files"}),
        f"private manifest has unknown fields {sorted(set(d) - {'format', 'name', 'files'})}",
    )
    return PrivateManifest(d["name"], files)
