"""Tensor frames: round trips for every codec, and refusal of every kind of malformed frame."""

from __future__ import annotations

import struct

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from shardnet.errors import WireError
from shardnet.wire.codecs import CODECS
from shardnet.wire.frames import MAGIC, MAX_NDIM, decode_frame, encode_frame, header_size

FLOAT_SHAPES = [(), (0,), (1,), (7,), (1, 1, 576), (1, 5, 576), (2, 3, 65), (1, 0, 576), (3, 1, 1, 2)]


@pytest.mark.parametrize("shape", FLOAT_SHAPES)
def test_fp32_round_trip_is_exact(shape: tuple[int, ...]) -> None:
    x = torch.randn(shape)
    y = decode_frame(encode_frame(x, "fp32"))
    assert y.dtype == torch.float32 and y.shape == x.shape
    assert torch.equal(x, y)


@pytest.mark.parametrize("shape", FLOAT_SHAPES)
@pytest.mark.parametrize("codec,rtol", [("fp16", 1e-3), ("bf16", 8e-3)])
def test_half_codecs_round_trip_within_their_precision(
    shape: tuple[int, ...], codec: str, rtol: float
) -> None:
    x = torch.randn(shape) * 10
    data = encode_frame(x, codec)
    y = decode_frame(data)
    assert y.dtype == torch.float32 and y.shape == x.shape
    torch.testing.assert_close(y, x, rtol=rtol, atol=1e-6)
    assert len(data) == header_size(len(shape)) + 2 * x.numel()


def test_half_codecs_match_torch_casts() -> None:
    x = torch.randn(1, 4, 33)
    assert torch.equal(decode_frame(encode_frame(x, "fp16")), x.half().float())
    assert torch.equal(decode_frame(encode_frame(x, "bf16")), x.bfloat16().float())


def test_float_codecs_accept_half_inputs() -> None:
    x = torch.randn(2, 8).to(torch.bfloat16)
    assert torch.equal(decode_frame(encode_frame(x, "fp32")), x.float())


@pytest.mark.parametrize("shape", [(0,), (1, 1), (1, 17), (3, 2)])
def test_int64_ids_round_trip(shape: tuple[int, ...]) -> None:
    ids = torch.randint(-(2**40), 2**40, shape)
    y = decode_frame(encode_frame(ids, "int64"))
    assert y.dtype == torch.int64 and torch.equal(ids, y)
    small = torch.randint(0, 49152, shape, dtype=torch.int32)
    assert torch.equal(decode_frame(encode_frame(small, "int64")), small.long())


def test_int8_keeps_outliers_exact_and_the_rest_close() -> None:
    torch.manual_seed(0)
    x = torch.randn(1, 3, 576)
    x[0, 0, 10] = 25000.0
    x[0, 2, 300] = -1234.5
    data = encode_frame(x, "int8")
    y = decode_frame(data)
    assert y[0, 0, 10] == 25000.0 and y[0, 2, 300] == -1234.5
    mask = torch.ones_like(x, dtype=torch.bool)
    mask[0, 0, 10] = mask[0, 2, 300] = False
    # half a quantization step of a block is absmax/254; randn's absmax over 32 values is < 5
    assert (y - x)[mask].abs().max() < 5 / 127 / 2 + 1e-6
    assert len(data) < 1.15 * x.numel() + 64  # about a byte a value


def test_int8_without_outlier_split_would_lose_the_block() -> None:
    """The reason for the split: a plain blockwise scale set by 25,000 flattens small values to zero."""
    x = torch.randn(64)
    x[0] = 25000.0
    plain = torch.round(x / (x.abs().max() / 127)) * (x.abs().max() / 127)
    assert (plain[1:] == 0).all()
    y = decode_frame(encode_frame(x, "int8"))
    assert (y[1:] - x[1:]).abs().max() < 0.05


@pytest.mark.parametrize("shape", [(0,), (1,), (31,), (32,), (33,), (64,), (1, 3, 100), (1, 0, 576)])
def test_int8_round_trip_odd_sizes(shape: tuple[int, ...]) -> None:
    x = torch.randn(shape)
    y = decode_frame(encode_frame(x, "int8"))
    assert y.shape == x.shape and y.dtype == torch.float32
    if x.numel():
        assert (y - x).abs().max() <= x.abs().max() / 127 / 2 + 1e-6


def test_int8_all_zero_and_sparse() -> None:
    z = torch.zeros(2, 100)
    assert torch.equal(decode_frame(encode_frame(z, "int8")), z)
    s = torch.zeros(200)
    s[[3, 77, 150]] = torch.tensor([1.0, -2.0, 3.5])
    assert torch.equal(decode_frame(encode_frame(s, "int8")), s)


@settings(max_examples=60, deadline=None)
@given(
    shape=st.lists(st.integers(0, 9), min_size=0, max_size=4),
    codec=st.sampled_from(["fp32", "fp16", "bf16", "int8"]),
    scale=st.floats(1e-3, 1e3),
)
def test_float_round_trip_property(shape: list[int], codec: str, scale: float) -> None:
    x = torch.randn(shape) * scale
    y = decode_frame(encode_frame(x, codec))
    assert y.shape == x.shape and y.dtype == torch.float32
    if x.numel():
        err = (y - x).abs().max().item()
        bound = {"fp32": 0.0, "fp16": 1e-3, "bf16": 8e-3, "int8": 1 / 127}[codec] * x.abs().max().item()
        assert err <= bound + 1e-6


# ---------------------------------------------------------------- refusals


def _frame(x: torch.Tensor | None = None, codec: str = "fp32") -> bytes:
    return encode_frame(torch.arange(6, dtype=torch.float32).reshape(2, 3) if x is None else x, codec)


def _expect(data: bytes, match: str, **kw: object) -> None:
    with pytest.raises(WireError, match=match):
        decode_frame(data, **kw)  # type: ignore[arg-type]


def test_refuses_bad_magic_and_version() -> None:
    data = bytearray(_frame())
    _expect(b"XXXX" + bytes(data[4:]), "not a shardnet tensor frame")
    data[4] = 9
    _expect(bytes(data), "version 9")


def test_refuses_short_data() -> None:
    _expect(b"", "shorter than a frame header")
    _expect(MAGIC + b"\x01", "shorter than a frame header")
    data = _frame()
    _expect(data[: header_size(2) - 1], "shorter than its 2-dimensional header")


def test_refuses_unknown_codec_and_dtype() -> None:
    data = bytearray(_frame())
    data[5] = 77
    _expect(bytes(data), "unknown codec id 77")
    data = bytearray(_frame())
    data[6] = 9
    _expect(bytes(data), "unknown dtype id 9")
    data = bytearray(_frame())
    data[6] = 2  # int64 declared for an fp32 frame
    _expect(bytes(data), "decodes to torch.float32")


def test_refuses_wrong_body_sizes() -> None:
    data = _frame()
    _expect(data[:-1], "truncated or has trailing data")
    _expect(data + b"\x00", "truncated or has trailing data")
    # header and body agree with each other but not with the shape
    body_at = header_size(2) - 8
    lying = bytearray(data[:-4])
    lying[body_at : body_at + 8] = struct.pack("<Q", 20)
    _expect(bytes(lying), "expected 24 for 6 values")


def test_refuses_absurd_shapes() -> None:
    data = bytearray(_frame())
    data[7] = MAX_NDIM + 1
    _expect(bytes(data), "at most 8")
    huge = bytearray(_frame())
    huge[8:16] = struct.pack("<II", 2**32 - 1, 2**32 - 1)
    _expect(bytes(huge), "more than the allowed")
    _expect(_frame(torch.zeros(1, 10, 576)), "more than the allowed 1000", max_elements=1000)
    assert decode_frame(_frame(torch.zeros(1, 10, 576)), max_elements=5760).shape == (1, 10, 576)


def test_refuses_an_empty_shape_whose_other_sizes_overflow_the_strides() -> None:
    """Found by the worker fuzz: 0 elements, so under any limit, but reshape overflowed (a 500)."""
    dims = (2**32 - 1, 1, 2**32 - 1, 2**31, 0)
    head = MAGIC + bytes([1, CODECS["fp32"].id, 1, len(dims)]) + struct.pack(f"<{len(dims)}I", *dims)
    _expect(head + struct.pack("<Q", 0), "too large in its non-empty dimensions", max_elements=1000)
    assert decode_frame(_frame(torch.zeros(1, 0, 576)), max_elements=1000).shape == (1, 0, 576)


def test_refuses_malformed_int8_bodies() -> None:
    data = bytearray(_frame(torch.randn(100) * 0 + 1, "int8"))
    at = header_size(1)  # the body starts with the outlier count
    bad = bytearray(data)
    bad[at : at + 4] = struct.pack("<I", 3)  # claims outliers it does not carry
    _expect(bytes(bad), "claims 3 outliers")
    x = torch.ones(100)
    x[5] = 1e4
    data = bytearray(_frame(x, "int8"))
    bad = bytearray(data)
    bad[at + 4 : at + 8] = struct.pack("<I", 100)  # outlier index out of range
    _expect(bytes(bad), "outlier index 100")
    bad = bytearray(data)
    bad[at + 8 : at + 12] = struct.pack("<f", float("nan"))
    _expect(bytes(bad), "NaN or infinite")


def test_encode_refuses_what_it_cannot_send() -> None:
    with pytest.raises(WireError, match="unknown codec 'zip'"):
        encode_frame(torch.zeros(3), "zip")
    with pytest.raises(WireError, match="carries integer token ids"):
        encode_frame(torch.zeros(3), "int64")
    with pytest.raises(WireError, match="carries floating-point"):
        encode_frame(torch.arange(3), "fp16")
    with pytest.raises(WireError, match="exceed the fp16 range"):
        encode_frame(torch.tensor([1e5]), "fp16")
    with pytest.raises(WireError, match="NaN"):
        encode_frame(torch.tensor([1.0, float("nan")]), "int8")
    with pytest.raises(WireError, match="at most 8"):
        encode_frame(torch.zeros([1] * 9))


def test_codec_ids_are_unique_and_stable() -> None:
    assert {c.name: c.id for c in CODECS.values()} == {"fp32": 1, "fp16": 2, "bf16": 3, "int64": 4, "int8": 5}
