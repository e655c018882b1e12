"""The projections' exact sums group exponents once for both signs: bit for bit what a sum per sign gives."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from shardnet.verify.fingerprint import _signed_exact_sums, _signs64, exact_sum, make_fingerprint


@pytest.mark.parametrize("width", [2, 7, 576, 49152])
def test_signed_sums_equal_one_exact_sum_per_sign_bit_for_bit(width: int) -> None:
    rng = np.random.default_rng(width)
    signs = _signs64(width, 2)
    rows = [
        rng.standard_normal(width).astype(np.float32).astype(np.float64),
        (rng.standard_normal(width) * 10.0 ** rng.integers(-30, 30, width))
        .astype(np.float32)
        .astype(np.float64),
        np.zeros(width),
        np.where(rng.random(width) < 0.5, 0.0, 1e-40)
        .astype(np.float32)
        .astype(np.float64),  # zeros, subnormals
    ]
    for row in rows:
        got = _signed_exact_sums(row, signs)
        want = [exact_sum(row * sign) for sign in signs]
        assert [g.hex() for g in got] == [w.hex() for w in want]


def test_a_fingerprint_of_logits_is_unchanged() -> None:
    """Fingerprint bytes (what workers commit and verifiers recompute) equal those of one sum per sign."""
    gen = torch.Generator().manual_seed(7)
    logits = torch.randn(1, 1, 49152, generator=gen) * 3
    hidden = torch.randn(1, 5, 576, generator=gen)
    assert make_fingerprint(logits) == _reference(logits)
    assert make_fingerprint(hidden) == _reference(hidden)


def _reference(output: torch.Tensor) -> bytes:
    """make_fingerprint with the projections summed one sign and one row at a time and the top indices found one
    row at a time (the implementation before sharing and batching)."""
    import shardnet.verify.fingerprint as fp

    saved = fp._signed_exact_sums_rows, fp._top_indices
    fp._signed_exact_sums_rows = lambda data, signs: [  # type: ignore[assignment]
        [exact_sum(row * sign) for sign in signs] for row in data
    ]
    fp._top_indices = _old_top_indices  # type: ignore[assignment]
    try:
        return fp.make_fingerprint(output)
    finally:
        fp._signed_exact_sums_rows, fp._top_indices = saved


def _old_top_indices(rows: torch.Tensor, k: int) -> torch.Tensor:
    """The per-row top indices before the rows without ties went through topk together (the specification)."""
    mags = rows.abs()
    kth = torch.topk(mags, k, dim=1).values[:, k - 1 :]
    chosen = []
    for row, threshold in zip(mags, kth, strict=True):
        candidates = torch.nonzero(row >= threshold).flatten()
        picked = candidates[torch.sort(row[candidates], descending=True, stable=True).indices][:k]
        if picked.numel() < k:
            picked = torch.sort(row, descending=True, stable=True).indices[:k]
        chosen.append(picked)
    return torch.stack(chosen)


def _awkward_rows(width: int) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(width)
    tied = torch.randn(width, generator=gen)
    tied[[1, width - 1]] = 7.0  # two equal largest values
    cut = torch.randn(width, generator=gen)
    cut[[0, 2, width - 2]] = -5.0  # three equal magnitudes across the cut of the top 2
    nan = torch.randn(width, generator=gen)
    nan[width // 2] = float("nan")
    inf = torch.randn(width, generator=gen) * 1e30
    inf[3] = float("-inf")
    return [
        torch.randn(width, generator=gen) * 3,
        tied,
        cut,
        nan,
        inf,
        torch.zeros(width),
        (torch.randn(width, generator=gen) * 1e-40),  # subnormals
    ]


@pytest.mark.parametrize("width", [7, 576, 49152])
def test_a_batch_of_fingerprints_is_bit_for_bit_each_one_alone(width: int) -> None:
    """make_fingerprints (a worker's batch of decode steps, in one pass) writes each step's bytes exactly as
    make_fingerprint of that step alone, and both as the per-row specification: with ties, NaN, inf, zeros."""
    import shardnet.verify.fingerprint as fp

    rows = _awkward_rows(width)
    outputs = [r.reshape(1, 1, width) for r in rows]
    alone = [make_fingerprint(o) for o in outputs]
    assert fp.make_fingerprints(outputs) == alone
    assert fp.make_fingerprints(outputs[:1]) == alone[:1]
    assert [_reference(o) for o in outputs] == alone
    stacked = torch.stack(rows)
    assert torch.equal(fp._top_indices(stacked, 2), _old_top_indices(stacked, 2))
    assert torch.equal(fp._top_indices(stacked, 1), _old_top_indices(stacked, 1))
