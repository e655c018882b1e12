"""Codecs for tensor bodies on the wire.

Each codec turns a flat, contiguous tensor into bytes and back. The frame (``frames.py``) carries the
codec id and the shape; the codec only sees the flat values and their count.

- ``fp32``, ``fp16``, ``bf16``: float hidden states, decoded to float32. ``fp16`` keeps greedy output
  identical on SmolLM2 (see docs/codecs.md); ``bf16`` keeps fp32's range with fewer mantissa bits.
- ``int64``: token ids, lossless.
- ``int8``: lossy. Values beyond ``OUTLIER_SIGMAS`` robust standard deviations (estimated from the
  median absolute value, so the outliers themselves do not inflate it) are sent apart, exactly, as
  (uint32 index, float32 value) pairs; the rest is quantized in blocks of ``INT8_BLOCK`` values, each
  block with its own float32 scale (absmax / 127). Without the outlier split a single activation of
  ~25,000 (seen at some SmolLM2 layer boundaries) would flatten its whole block to zero.

All multi-byte numbers are little-endian.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass

import numpy as np
import torch

from shardnet.errors import WireError

INT8_BLOCK = 32
"""Values per int8 block; each block has one float32 scale."""

OUTLIER_SIGMAS = 6.0
"""A value whose magnitude exceeds this many robust standard deviations is sent exactly."""

_FP16_MAX = 65504.0
_MAD_TO_SIGMA = 1.0 / 0.6744897501960817  # median(|x|) of a centred normal is 0.6745 sigma


@dataclass(frozen=True)
class Codec:
    """How a flat tensor becomes a frame body and back."""

    name: str
    id: int
    integer: bool
    """True for codecs of integer tensors (token ids), False for float tensors."""

    def encode(self, flat: torch.Tensor) -> bytes:
        raise NotImplementedError

    def decode(self, body: memoryview, numel: int) -> torch.Tensor:
        raise NotImplementedError

    def out_dtype(self) -> torch.dtype:
        return torch.int64 if self.integer else torch.float32


@dataclass(frozen=True)
class _PlainCodec(Codec):
    """Values stored one after another in a numpy dtype."""

    np_dtype: str = "<f4"

    def encode(self, flat: torch.Tensor) -> bytes:
        if self.name == "fp16" and flat.numel() and float(flat.abs().max()) > _FP16_MAX:
            raise WireError(
                f"values up to {float(flat.abs().max()):.4g} exceed the fp16 range ({_FP16_MAX}); "
                "send this route with bf16 or fp32"
            )
        if self.name == "bf16":
            return flat.to(torch.bfloat16).view(torch.int16).numpy().astype("<i2").tobytes()
        return flat.numpy().astype(self.np_dtype).tobytes()

    def body_size(self, numel: int) -> int:
        return numel * np.dtype(self.np_dtype).itemsize

    def decode(self, body: memoryview, numel: int) -> torch.Tensor:
        expected = self.body_size(numel)
        if len(body) != expected:
            raise WireError(
                f"{self.name} frame body has {len(body)} bytes, expected {expected} for {numel} values; "
                "the frame is truncated or was built with another codec"
            )
        arr = np.frombuffer(body, dtype=self.np_dtype).copy()
        if self.name == "bf16":
            return torch.from_numpy(arr.astype(np.int16)).view(torch.bfloat16).to(torch.float32)
        t = torch.from_numpy(arr)
        return t.to(self.out_dtype())


_U32 = struct.Struct("<I")


@dataclass(frozen=True)
class _Int8Codec(Codec):
    """Blockwise int8 with outliers sent apart (see the module docstring for the layout)."""

    block: int = INT8_BLOCK
    sigmas: float = OUTLIER_SIGMAS

    def encode(self, flat: torch.Tensor) -> bytes:
        x = flat.to(torch.float32)
        n = x.numel()
        if n and not bool(torch.isfinite(x).all()):
            raise WireError("int8 codec cannot encode NaN or infinite values; send this tensor with fp32")
        if n:
            mag = x.abs()
            sigma = float(mag.median()) * _MAD_TO_SIGMA
            if sigma == 0.0:  # mostly zeros: fall back to the root mean square
                sigma = float(mag.square().mean().sqrt())
            out_idx = torch.nonzero(mag > self.sigmas * sigma).flatten()
        else:
            out_idx = torch.zeros(0, dtype=torch.int64)
        out_val = x[out_idx]
        rest = x.clone()
        rest[out_idx] = 0.0
        nblocks = math.ceil(n / self.block)
        padded = torch.zeros(nblocks * self.block, dtype=torch.float32)
        padded[:n] = rest
        blocks = padded.view(nblocks, self.block)
        scales = blocks.abs().amax(dim=1) / 127.0
        safe = torch.where(scales > 0, scales, torch.ones_like(scales))
        q = torch.round(blocks / safe[:, None]).clamp(-127, 127).to(torch.int8).flatten()[:n]
        return b"".join(
            (
                _U32.pack(out_idx.numel()),
                out_idx.numpy().astype("<u4").tobytes(),
                out_val.numpy().astype("<f4").tobytes(),
                scales.numpy().astype("<f4").tobytes(),
                q.numpy().tobytes(),
            )
        )

    def decode(self, body: memoryview, numel: int) -> torch.Tensor:
        if len(body) < 4:
            raise WireError(f"int8 frame body has {len(body)} bytes, too short for its outlier count")
        (n_out,) = _U32.unpack_from(body, 0)
        nblocks = math.ceil(numel / self.block)
        expected = 4 + 8 * n_out + 4 * nblocks + numel
        if n_out > numel or len(body) != expected:
            raise WireError(
                f"int8 frame body has {len(body)} bytes and claims {n_out} outliers; expected "
                f"{4 + 4 * nblocks + numel} + 8 per outlier (at most {numel}) for {numel} values"
            )
        off = 4
        idx = np.frombuffer(body, dtype="<u4", count=n_out, offset=off).astype(np.int64)
        off += 4 * n_out
        val = np.frombuffer(body, dtype="<f4", count=n_out, offset=off)
        off += 4 * n_out
        scales = np.frombuffer(body, dtype="<f4", count=nblocks, offset=off)
        off += 4 * nblocks
        q = np.frombuffer(body, dtype=np.int8, count=numel, offset=off)
        if n_out and int(idx.max()) >= numel:
            raise WireError(f"int8 frame names outlier index {int(idx.max())} beyond its {numel} values")
        if not np.isfinite(scales).all() or not np.isfinite(val).all():
            raise WireError("int8 frame carries NaN or infinite scales or outliers")
        x = q.astype(np.float32) * np.repeat(scales, self.block)[:numel]
        x[idx] = val
        return torch.from_numpy(x)


CODECS: dict[str, Codec] = {
    c.name: c
    for c in (
        _PlainCodec("fp32", 1, False, "<f4"),
        _PlainCodec("fp16", 2, False, "<f2"),
        _PlainCodec("bf16", 3, False, "<i2"),
        _PlainCodec("int64", 4, True, "<i8"),
        _Int8Codec("int8", 5, False),
    )
}
"""Codecs by name, as named in a session's ``codec`` field."""

CODECS_BY_ID: dict[int, Codec] = {c.id: c for c in CODECS.values()}

LOSSLESS = frozenset({"fp32", "int64"})
"""Codecs that give back exactly what was sent (fp32 input)."""


def get_codec(name: str) -> Codec:
    """The codec called ``name``; raises ``WireError`` naming the known ones otherwise."""
    try:
        return CODECS[name]
    except KeyError:
        raise WireError(f"unknown codec {name!r}; choose one of {', '.join(CODECS)}") from None
