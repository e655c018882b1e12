"""Seal and open one file: chunked AES-256-GCM, then Reed-Solomon (zfec) into n pieces of which any k rebuild.

Streaming, so a multi-GB file never sits in memory: the plaintext is read ``CHUNK_SIZE`` bytes at a time.
Chunk ``i`` is encrypted with nonce ``i`` (96-bit big-endian; the key is fresh for every file, so a nonce is
never reused under one key) and associated data binding the format, the index and whether it is the last
chunk: chunks cannot be reordered, dropped, or the file cut short at a chunk boundary without the tag
failing. Each ciphertext chunk (plaintext + 16-byte tag) is zero-padded to a multiple of k, split into k
blocks and encoded into n blocks; piece ``j`` is block ``j`` of every chunk, in order. Every size follows
from the plaintext size, the chunk size and k, so a piece needs no framing.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Mapping
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import zfec
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from shardnet.errors import IntegrityError, ShardnetError
from shardnet.store.cid import CidHasher
from shardnet.store.local import LocalStore
from shardnet.store.private.merkle import LEAF_SIZE, LeafHasher, merkle_root

CHUNK_SIZE = 1 << 20
"""Plaintext bytes per encrypted chunk."""
TAG_SIZE = 16
KEY_SIZE = 32
_AAD_PREFIX = b"shardnet-sealed/1"


class DecryptError(ShardnetError):
    """A chunk failed authentication: the key is wrong or the rebuilt ciphertext was altered."""


@dataclass(frozen=True)
class SealedPiece:
    """One erasure-coded piece as written: its index among the n, CID, size and Merkle root."""

    index: int
    cid: str
    size: int
    merkle_root: bytes
    leaves: int


@dataclass(frozen=True)
class SealedFile:
    """What sealing a file produced (everything but the key, which the caller keeps apart)."""

    size: int
    sha256: str
    chunk_size: int
    n: int
    k: int
    pieces: tuple[SealedPiece, ...]


def check_params(n: int, k: int) -> None:
    """Refuse erasure parameters zfec cannot use, with what to pass instead."""
    if not (1 <= k <= n <= 256):
        raise ShardnetError(
            f"erasure parameters n={n}, k={k} are invalid: need 1 <= k <= n <= 256 (e.g. --n 6 --k 4)"
        )


def chunk_count(size: int, chunk_size: int = CHUNK_SIZE) -> int:
    """Chunks a plaintext of ``size`` bytes is cut into (an empty file is one empty chunk)."""
    return max(1, -(-size // chunk_size))


def _aad(index: int, last: bool) -> bytes:
    return _AAD_PREFIX + index.to_bytes(8, "big") + (b"\x01" if last else b"\x00")


def _nonce(index: int) -> bytes:
    return index.to_bytes(12, "big")


def block_sizes(size: int, k: int, chunk_size: int = CHUNK_SIZE) -> list[tuple[int, int]]:
    """Per chunk: (ciphertext length, length of each of its blocks in every piece)."""
    out = []
    for i in range(chunk_count(size, chunk_size)):
        ct_len = min(chunk_size, size - i * chunk_size) + TAG_SIZE
        out.append((ct_len, -(-ct_len // k)))
    return out


def piece_size(size: int, k: int, chunk_size: int = CHUNK_SIZE) -> int:
    """Bytes of every piece of a ``size``-byte file (computed, not summed: a manifest's size may be huge)."""
    full, rest = divmod(size, chunk_size)
    if rest == 0 and full > 0:
        return full * -(-(chunk_size + TAG_SIZE) // k)
    return full * -(-(chunk_size + TAG_SIZE) // k) + -(-(rest + TAG_SIZE) // k)


def seal_file(
    path: str | Path,
    store: LocalStore,
    n: int = 6,
    k: int = 4,
    *,
    key: bytes | None = None,
    chunk_size: int = CHUNK_SIZE,
    on_bytes: Callable[[int], None] | None = None,
) -> tuple[SealedFile, bytes]:
    """Encrypt and erasure-code the file at ``path`` into n pieces put in ``store``; return them and the key.

    A fresh random key is drawn unless ``key`` is given (tests). Pieces are written to temporary files
    in the store and renamed into place only once complete, so the store never holds a partial piece.
    """
    check_params(n, k)
    key = key if key is not None else AESGCM.generate_key(bit_length=256)
    aead = AESGCM(key)
    encoder = zfec.Encoder(k, n)
    size = os.path.getsize(path)
    plain_hash = hashlib.sha256()
    hashers = [CidHasher() for _ in range(n)]
    leaf_hashers = [LeafHasher(LEAF_SIZE) for _ in range(n)]
    with ExitStack() as stack, open(path, "rb") as src:
        outs = [stack.enter_context(store.incoming()) for _ in range(n)]
        chunks = chunk_count(size, chunk_size)
        for i in range(chunks):
            plain = src.read(chunk_size)
            plain_hash.update(plain)
            sealed = aead.encrypt(_nonce(i), plain, _aad(i, i == chunks - 1))
            block = -(-len(sealed) // k)
            sealed += b"\x00" * (block * k - len(sealed))
            primary = tuple(sealed[j * block : (j + 1) * block] for j in range(k))
            for j, data in enumerate(encoder.encode(primary)):
                data = bytes(data)
                outs[j][0].write(data)
                hashers[j].update(data)
                leaf_hashers[j].update(data)
            if on_bytes is not None:
                on_bytes(len(plain))
        if src.read(1):
            raise ShardnetError(
                f"{path} grew while it was being sealed; seal it again when it is not being written"
            )
        pieces = []
        for j, (f, tmp) in enumerate(outs):
            f.flush()
            os.fsync(f.fileno())
            cid = hashers[j].cid()
            store.commit(tmp, cid)
            leaves = leaf_hashers[j].finish()
            pieces.append(SealedPiece(j, cid, hashers[j].size, merkle_root(leaves), len(leaves)))
    sealed_file = SealedFile(size, plain_hash.hexdigest(), chunk_size, n, k, tuple(pieces))
    return sealed_file, key


def open_pieces(
    size: int,
    sha256: str,
    k: int,
    n: int,
    pieces: Mapping[int, BinaryIO],
    key: bytes,
    dest: BinaryIO,
    *,
    chunk_size: int = CHUNK_SIZE,
    label: str = "file",
    on_bytes: Callable[[int], None] | None = None,
) -> None:
    """Rebuild and decrypt a file from any k of its pieces (``{piece index: open file}``) into ``dest``.

    Raises ``DecryptError`` for a wrong key or altered ciphertext, ``IntegrityError`` when a piece is short
    or the plaintext does not hash to ``sha256``. The caller writes ``dest`` to a temporary file and
    renames it only after this returns.
    """
    if len(pieces) < k:
        raise IntegrityError(f"{label}: {len(pieces)} pieces given, {k} are needed to rebuild it")
    if len(key) != KEY_SIZE:
        raise DecryptError(f"{label}: the key has {len(key)} bytes, AES-256 needs {KEY_SIZE}: wrong key file")
    chosen = sorted(pieces)[:k]
    decoder = zfec.Decoder(k, n)
    aead = AESGCM(key)
    plain_hash = hashlib.sha256()
    sizes = block_sizes(size, k, chunk_size)
    for i, (ct_len, block) in enumerate(sizes):
        blocks = []
        for j in chosen:
            data = pieces[j].read(block)
            if len(data) != block:
                raise IntegrityError(f"{label}: piece {j} is truncated (chunk {i} of {len(sizes)} is short)")
            blocks.append(data)
        primary = decoder.decode(blocks, chosen)
        sealed = b"".join(bytes(b) for b in primary)[:ct_len]
        try:
            plain = aead.decrypt(_nonce(i), sealed, _aad(i, i == len(sizes) - 1))
        except InvalidTag:
            raise DecryptError(
                f"{label}: chunk {i} failed authentication: the key is not this file's key (or its pieces "
                "were altered); ask the owner for a key wrapped to you"
            ) from None
        plain_hash.update(plain)
        dest.write(plain)
        if on_bytes is not None:
            on_bytes(len(plain))
    if plain_hash.hexdigest() != sha256:
        raise IntegrityError(
            f"{label}: the rebuilt file hashes to {plain_hash.hexdigest()}, the manifest says {sha256}"
        )
