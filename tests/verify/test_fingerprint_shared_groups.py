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
    """make_fingerprint with the projections summed one sign at a time (the implementation before sharing)."""
    import shardnet.verify.fingerprint as fp

    saved = fp._signed_exact_sums
    fp._signed_exact_sums = lambda row, signs: [exact_sum(row * sign) for sign in signs]  # type: ignore[assignment]
    try:
        return fp.make_fingerprint(output)
    finally:
        fp._signed_exact_sums = saved
