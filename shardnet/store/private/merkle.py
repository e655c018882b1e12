"""Merkle trees over a piece's fixed-size segments, for spot checks and on-chain storage challenges.

Leaves are ``sha256(segment)`` for each ``LEAF_SIZE``-byte segment of a piece (the last one may be
shorter); an inner node is ``sha256(left || right)``, and a level with an odd count carries its last node
up unchanged. The root is recorded in the private manifest per piece; a storage node proves it still holds
segment ``i`` by sending the segment and the sibling hashes on its path (``StorageRewards.sol`` checks the
same rule with the sha256 precompile).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

LEAF_SIZE = 1024
"""Bytes per Merkle leaf: small enough that a segment fits in a cheap on-chain answer."""


def _h(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def leaf_hashes(path: str | Path, leaf_size: int = LEAF_SIZE) -> list[bytes]:
    """The leaf hashes of the file at ``path`` (read in 1 MiB blocks, so a large piece is never loaded whole)."""
    leaves: list[bytes] = []
    block = leaf_size * 1024
    with open(path, "rb") as f:
        while data := f.read(block):
            leaves.extend(_h(data[i : i + leaf_size]) for i in range(0, len(data), leaf_size))
    return leaves or [_h(b"")]


class LeafHasher:
    """Collects leaf hashes of a stream fed in arbitrary pieces (used while a piece is being written)."""

    def __init__(self, leaf_size: int = LEAF_SIZE) -> None:
        self.leaf_size = leaf_size
        self.leaves: list[bytes] = []
        self._pending = bytearray()

    def update(self, data: bytes) -> None:
        self._pending += data
        cut = len(self._pending) - len(self._pending) % self.leaf_size
        if cut:
            view = bytes(self._pending[:cut])
            self.leaves.extend(_h(view[i : i + self.leaf_size]) for i in range(0, cut, self.leaf_size))
            del self._pending[:cut]

    def finish(self) -> list[bytes]:
        if self._pending or not self.leaves:
            self.leaves.append(_h(bytes(self._pending)))
            self._pending.clear()
        return self.leaves


def _levels(leaves: list[bytes]) -> list[list[bytes]]:
    levels = [list(leaves)]
    while len(levels[-1]) > 1:
        cur = levels[-1]
        nxt = [_h(cur[i] + cur[i + 1]) for i in range(0, len(cur) - 1, 2)]
        if len(cur) % 2:
            nxt.append(cur[-1])
        levels.append(nxt)
    return levels


def merkle_root(leaves: list[bytes]) -> bytes:
    """The root over ``leaves`` (one leaf: the leaf itself)."""
    return _levels(leaves)[-1][0]


def merkle_proof(leaves: list[bytes], index: int) -> list[bytes]:
    """Sibling hashes from leaf ``index`` up to the root (a level where the node has no sibling adds nothing)."""
    if not 0 <= index < len(leaves):
        raise IndexError(f"leaf {index} is outside 0..{len(leaves) - 1}")
    proof: list[bytes] = []
    for level in _levels(leaves)[:-1]:
        sibling = index ^ 1
        if sibling < len(level):
            proof.append(level[sibling])
        index //= 2
    return proof


def verify_proof(segment: bytes, index: int, leaf_count: int, proof: list[bytes], root: bytes) -> bool:
    """True when ``segment`` is leaf ``index`` of a tree of ``leaf_count`` leaves whose root is ``root``."""
    if not 0 <= index < leaf_count:
        return False
    node, width, used = _h(segment), leaf_count, 0
    while width > 1:
        sibling = index ^ 1
        if sibling < width:
            if used >= len(proof):
                return False
            other = proof[used]
            used += 1
            node = _h(node + other) if index % 2 == 0 else _h(other + node)
        index //= 2
        width = (width + 1) // 2
    return used == len(proof) and node == root


def read_segment(path: str | Path, index: int, leaf_size: int = LEAF_SIZE) -> bytes:
    """Segment ``index`` of the file at ``path``."""
    with open(path, "rb") as f:
        f.seek(index * leaf_size)
        return f.read(leaf_size)
