"""Step fingerprints: deterministic bytes of a stated size, drift-tolerant distance, Merkle leaves."""

from __future__ import annotations

import math

import torch
from eth_utils import keccak

from shardnet.verify.fingerprint import (
    fingerprint_distance,
    leaf,
    make_fingerprint,
    parse_fingerprint,
    projection_matrix,
)
from shardnet.wire.commitment import merkle_proof, merkle_root, step_hash, verify_proof


def _hidden(n: int, d: int = 576, seed: int = 0) -> torch.Tensor:
    return torch.randn((1, n, d), generator=torch.Generator().manual_seed(seed))


def test_same_output_same_bytes_whatever_its_layout_or_dtype_of_storage() -> None:
    h = _hidden(3)
    fp = make_fingerprint(h)
    assert make_fingerprint(h.clone()) == fp
    assert make_fingerprint(h[0]) == fp  # [n, d] as [1, n, d]
    strided = torch.empty(1, 3, 2 * 576)[:, :, ::2]
    strided.copy_(h)
    assert make_fingerprint(strided) == fp
    assert make_fingerprint(_hidden(3, seed=1)) != fp


def test_projections_are_exactly_rounded_sums_so_every_machine_writes_the_same_bytes() -> None:
    from fractions import Fraction

    h = _hidden(1, d=64, seed=3) * torch.logspace(-8, 3, 64)  # magnitudes far apart: order matters in floats
    fp = parse_fingerprint(make_fingerprint(h))
    signs = projection_matrix(64, 2)
    for j in range(2):
        exact = sum(
            Fraction(float(v)) * int(s) for v, s in zip(h[0, 0].tolist(), signs[:, j].tolist(), strict=True)
        )
        expected = torch.tensor(float(exact) / math.sqrt(64), dtype=torch.float64).numpy().astype("<f2")
        assert fp.projections[0, j].item() == float(expected)
    with_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert make_fingerprint(h) == make_fingerprint(h.clone())
    finally:
        torch.set_num_threads(with_threads)


def test_size_is_a_few_hundred_bytes_per_32_decode_steps() -> None:
    steps = [make_fingerprint(_hidden(1, seed=s)) for s in range(32)]
    assert all(len(fp) == 6 + 12 for fp in steps)  # header + 2 indices, 2 values, 2 projections
    assert sum(len(fp) for fp in steps) == 576
    assert len(make_fingerprint(_hidden(40))) == 6 + 40 * 12  # a prompt step: 12 bytes a position
    logits = torch.randn(1, 1, 70_000)  # a vocabulary past 65535 needs 4-byte indices
    assert len(make_fingerprint(logits)) == 6 + 2 * 4 + 4 + 4


def test_layout_holds_the_top_k_by_magnitude_ties_to_the_lower_index() -> None:
    h = torch.zeros(1, 1, 8)
    h[0, 0, 5] = -3.0
    h[0, 0, 2] = 2.0
    h[0, 0, 6] = 2.0  # tie with index 2: the lower index wins
    fp = parse_fingerprint(make_fingerprint(h))
    assert fp.indices.tolist() == [[5, 2]]
    assert fp.values.tolist() == [[-3.0, 2.0]]
    expected = (h[0] @ projection_matrix(8, 2) / math.sqrt(8)).half().float()
    assert torch.equal(fp.projections, expected)
    assert set(projection_matrix(8, 2).unique().tolist()) <= {-1.0, 1.0}


def test_top_indices_equal_a_stable_sort_even_with_many_ties() -> None:
    from shardnet.verify.fingerprint import _top_indices

    rows = torch.randint(
        -3, 4, (50, 40), generator=torch.Generator().manual_seed(0)
    ).float()  # ties everywhere
    for k in (1, 2, 5):
        expected = torch.sort(rows.abs(), dim=1, descending=True, stable=True).indices[:, :k]
        assert torch.equal(_top_indices(rows, k), expected)


def test_distance_is_small_for_drift_and_large_for_changes() -> None:
    h = _hidden(4)
    fp = make_fingerprint(h)
    assert fingerprint_distance(fp, h) < 2e-3  # fp16 rounding only
    drift = h * (1 + 1e-4 * torch.randn(h.shape, generator=torch.Generator().manual_seed(5)))
    assert fingerprint_distance(fp, drift) < 2e-3
    noisy = h + 0.05 * torch.randn(h.shape, generator=torch.Generator().manual_seed(6))
    assert fingerprint_distance(fp, noisy) > 0.01
    assert fingerprint_distance(fp, _hidden(4, seed=9)) > 0.5
    assert fingerprint_distance(fp, h[:, :3]) == math.inf  # another number of positions
    assert fingerprint_distance(fp[:-1], h) == math.inf  # truncated bytes
    assert fingerprint_distance(b"\x02" + fp[1:], h) == math.inf  # unknown version
    bad = h.clone()
    bad[0, 1, 7] = float("nan")
    assert fingerprint_distance(make_fingerprint(bad), h) == math.inf


def test_leaves_go_into_the_wire_merkle_tree() -> None:
    fps = [make_fingerprint(_hidden(1, seed=s)) for s in range(5)]
    hashes = [step_hash(f"frame {s}".encode()) for s in range(5)]
    leaves = [leaf(h, fp) for h, fp in zip(hashes, fps, strict=True)]
    assert leaves[0] == keccak(hashes[0] + keccak(fps[0]))
    root = merkle_root(leaves)
    for i in range(5):
        assert verify_proof(leaves[i], merkle_proof(leaves, i), root, i, 5)
    other = leaf(hashes[2], make_fingerprint(_hidden(1, seed=77)))
    assert not verify_proof(other, merkle_proof(leaves, 2), root, 2, 5)
