"""Commitments: the hash of each step a worker sent, and the Merkle root it posts on chain for a job.

``step_hash`` is keccak256 of exactly the bytes of the response frame, so a worker can never deny what
it sent. The Merkle tree is built over the step hashes in step order:

- a parent is ``keccak256(left || right)`` (64 bytes in, ordered, not sorted: position matters);
- **odd-leaf rule**: when a level has an odd number of nodes, the last one is promoted unchanged to
  the next level (it is *not* paired with a copy of itself, which would let two different step lists
  share a root, as in Bitcoin's CVE-2012-2459);
- the root of one hash is that hash; the root of no hashes is 32 zero bytes.

A proof lists the sibling hashes from the leaf upwards, skipping levels where the node was promoted;
checking it needs the leaf's index and the number of leaves, which the job's step count gives.
This is cheap to reproduce in Solidity.
"""

from __future__ import annotations

from collections.abc import Sequence

from eth_utils import keccak

EMPTY_ROOT = bytes(32)


def step_hash(frame_bytes: bytes | bytearray | memoryview) -> bytes:
    """keccak256 of exactly the bytes sent for one step (32 bytes)."""
    return keccak(bytes(frame_bytes))


def _parent(left: bytes, right: bytes) -> bytes:
    return keccak(left + right)


def _check_leaves(hashes: Sequence[bytes]) -> list[bytes]:
    leaves = [bytes(h) for h in hashes]
    for i, h in enumerate(leaves):
        if len(h) != 32:
            raise ValueError(f"leaf {i} is {len(h)} bytes; Merkle leaves are 32-byte hashes")
    return leaves


def _next_level(level: list[bytes]) -> list[bytes]:
    nxt = [_parent(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
    if len(level) % 2:
        nxt.append(level[-1])  # odd-leaf rule: promote the last node unchanged
    return nxt


def merkle_root(hashes: Sequence[bytes]) -> bytes:
    """The Merkle root of 32-byte ``hashes`` in order (see the module docstring for the rules)."""
    level = _check_leaves(hashes)
    if not level:
        return EMPTY_ROOT
    while len(level) > 1:
        level = _next_level(level)
    return level[0]


def merkle_proof(hashes: Sequence[bytes], index: int) -> list[bytes]:
    """Sibling hashes proving that ``hashes[index]`` is under ``merkle_root(hashes)``, leaf upwards."""
    level = _check_leaves(hashes)
    if not 0 <= index < len(level):
        raise IndexError(f"leaf index {index} is outside 0..{len(level) - 1}")
    proof: list[bytes] = []
    while len(level) > 1:
        sibling = index ^ 1
        if sibling < len(level):
            proof.append(level[sibling])
        level = _next_level(level)
        index //= 2
    return proof


def verify_proof(leaf: bytes, proof: Sequence[bytes], root: bytes, index: int, count: int) -> bool:
    """True when ``proof`` shows ``leaf`` at position ``index`` of ``count`` leaves under ``root``."""
    if not 0 <= index < count or len(leaf) != 32:
        return False
    node, width, steps = bytes(leaf), count, list(proof)
    while width > 1:
        sibling = index ^ 1
        if sibling < width:
            if not steps:
                return False
            other = bytes(steps.pop(0))
            node = _parent(node, other) if index % 2 == 0 else _parent(other, node)
        index //= 2
        width = (width + 1) // 2
    return not steps and node == bytes(root)
