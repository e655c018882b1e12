"""Step hashes and the Merkle commitment, checked against a straightforward recomputation."""

from __future__ import annotations

import pytest
from eth_utils import keccak
from hypothesis import given
from hypothesis import strategies as st

from shardnet.wire.commitment import EMPTY_ROOT, merkle_proof, merkle_root, step_hash, verify_proof


def _leaves(n: int) -> list[bytes]:
    return [step_hash(f"frame {i}".encode()) for i in range(n)]


def test_step_hash_is_keccak_of_the_exact_bytes() -> None:
    assert step_hash(b"abc") == keccak(b"abc")
    assert step_hash(memoryview(b"abc")) == keccak(b"abc")
    assert step_hash(b"abc") != step_hash(b"abd")
    # keccak256("") is the well-known Ethereum constant
    assert step_hash(b"").hex() == "c5d2460186f7233c927e7db2dcc703c0e500b653ca82273b7bfad8045d85a470"


def test_small_trees_by_hand() -> None:
    a, b, c = _leaves(3)
    assert merkle_root([]) == EMPTY_ROOT
    assert merkle_root([a]) == a
    assert merkle_root([a, b]) == keccak(a + b)
    # odd-leaf rule: c is promoted, not paired with itself
    assert merkle_root([a, b, c]) == keccak(keccak(a + b) + c)
    assert merkle_root([a, b, c]) != merkle_root([a, b, c, c])
    assert merkle_root([a, b]) != merkle_root([b, a])


def test_root_rejects_non_hash_leaves() -> None:
    with pytest.raises(ValueError, match="32-byte"):
        merkle_root([b"short"])


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 7, 8, 9, 33])
def test_every_proof_verifies_and_tampering_fails(n: int) -> None:
    leaves = _leaves(n)
    root = merkle_root(leaves)
    for i, leaf in enumerate(leaves):
        proof = merkle_proof(leaves, i)
        assert verify_proof(leaf, proof, root, i, n)
        assert not verify_proof(step_hash(b"forged"), proof, root, i, n)
        if n > 1:
            assert not verify_proof(leaf, proof, root, (i + 1) % n, n)
        if proof:
            assert not verify_proof(leaf, proof[:-1], root, i, n)
            assert not verify_proof(leaf, [*proof, leaf], root, i, n)
    assert not verify_proof(leaves[0], merkle_proof(leaves, 0), root, n, n)


def test_proof_index_out_of_range() -> None:
    with pytest.raises(IndexError):
        merkle_proof(_leaves(3), 3)


@given(st.lists(st.binary(min_size=0, max_size=40), min_size=1, max_size=40), st.data())
def test_proof_property(frames: list[bytes], data: st.DataObject) -> None:
    leaves = [step_hash(f) for f in frames]
    i = data.draw(st.integers(0, len(leaves) - 1))
    assert verify_proof(leaves[i], merkle_proof(leaves, i), merkle_root(leaves), i, len(leaves))
