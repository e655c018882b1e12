"""Calibrated tolerances: looked up per dtype pair, an uncalibrated pair is refused with advice."""

from __future__ import annotations

import pytest
import torch

from shardnet.verify.tolerance import tolerance_for


def test_pairs_are_ordered_by_precision() -> None:
    fp32, fp16, bf16 = (tolerance_for(d) for d in (torch.float32, "float16", "bfloat16"))
    assert fp32.distance < fp16.distance < bf16.distance
    assert fp32.tie_margin < fp16.tie_margin < bf16.tie_margin


def test_an_uncalibrated_dtype_is_refused_with_what_to_do() -> None:
    with pytest.raises(ValueError, match="refuse this dtype at announce"):
        tolerance_for(torch.float64)
    with pytest.raises(ValueError, match="calibrate_verify"):
        tolerance_for("float32", "bfloat16")
