"""Binary tensor frames: how hidden states and token ids travel between workers.

A frame is a small header followed by the body that its codec wrote (all numbers little-endian)::

    offset  size        field
    0       4           magic b"SNTF"
    4       1           version (1)
    5       1           codec id (see ``codecs.CODECS``)
    6       1           dtype of the decoded tensor: 1 = float32, 2 = int64
    7       1           ndim, 0 … MAX_NDIM
    8       4 * ndim    shape, uint32 each
    …       8           body length in bytes, uint64
    …       body        the codec's bytes

``decode_frame`` checks every field, the body length against both the header and the codec, and the
element count against a limit, and raises ``WireError`` saying what is wrong; it never trusts a
length it has not checked.
"""

from __future__ import annotations

import math
import struct

import torch

from shardnet.errors import WireError
from shardnet.wire.codecs import CODECS_BY_ID, Codec, get_codec

MAGIC = b"SNTF"
VERSION = 1
MAX_NDIM = 8
MAX_ELEMENTS = 1 << 30
"""Default cap on the elements of a decoded frame (4 GiB of float32); callers pass a tighter one."""

_FIXED = struct.Struct("<4sBBBB")
_BODY_LEN = struct.Struct("<Q")
_DTYPE_IDS = {torch.float32: 1, torch.int64: 2}
_DTYPES_BY_ID = {v: k for k, v in _DTYPE_IDS.items()}


def header_size(ndim: int) -> int:
    """Bytes of the header of a frame with ``ndim`` dimensions."""
    return _FIXED.size + 4 * ndim + _BODY_LEN.size


def encode_frame(tensor: torch.Tensor, codec: str = "fp32") -> bytes:
    """Encode ``tensor`` as one frame with the named codec.

    Float codecs take any floating tensor (decoded as float32); ``int64`` takes integer tensors.
    """
    c = get_codec(codec)
    if tensor.dtype.is_complex or tensor.dtype == torch.bool:
        raise WireError(f"cannot send a {tensor.dtype} tensor; send float hidden states or int64 token ids")
    if c.integer == tensor.dtype.is_floating_point:
        want = "integer token ids" if c.integer else "floating-point hidden states"
        raise WireError(f"codec {codec!r} carries {want}, got a {tensor.dtype} tensor")
    if tensor.dim() > MAX_NDIM:
        raise WireError(f"tensor has {tensor.dim()} dimensions, a frame holds at most {MAX_NDIM}")
    if any(d >= 1 << 32 for d in tensor.shape):
        raise WireError(f"tensor shape {tuple(tensor.shape)} has a dimension too large for a frame")
    flat = tensor.detach().to("cpu", c.out_dtype()).contiguous().reshape(-1)
    body = c.encode(flat)
    header = _FIXED.pack(MAGIC, VERSION, c.id, _DTYPE_IDS[c.out_dtype()], tensor.dim())
    shape = struct.pack(f"<{tensor.dim()}I", *tensor.shape)
    return b"".join((header, shape, _BODY_LEN.pack(len(body)), body))


def read_header(data: bytes | bytearray | memoryview) -> tuple[Codec, torch.dtype, tuple[int, ...], int]:
    """Parse and check a frame header: (codec, decoded dtype, shape, header length)."""
    view = memoryview(data)
    if len(view) < _FIXED.size:
        raise WireError(f"frame of {len(view)} bytes is shorter than a frame header ({_FIXED.size} bytes)")
    magic, version, codec_id, dtype_id, ndim = _FIXED.unpack_from(view, 0)
    if magic != MAGIC:
        raise WireError(f"not a shardnet tensor frame (magic {bytes(magic)!r}, expected {MAGIC!r})")
    if version != VERSION:
        raise WireError(
            f"frame version {version} is not supported (this side speaks {VERSION}); upgrade shardnet"
        )
    codec = CODECS_BY_ID.get(codec_id)
    if codec is None:
        raise WireError(f"frame uses unknown codec id {codec_id}; known: {sorted(CODECS_BY_ID)}")
    dtype = _DTYPES_BY_ID.get(dtype_id)
    if dtype is None:
        raise WireError(f"frame declares unknown dtype id {dtype_id}; known: {sorted(_DTYPES_BY_ID)}")
    if dtype != codec.out_dtype():
        raise WireError(
            f"frame declares dtype {dtype} but codec {codec.name!r} decodes to {codec.out_dtype()}"
        )
    if ndim > MAX_NDIM:
        raise WireError(f"frame declares {ndim} dimensions, at most {MAX_NDIM} are allowed")
    size = header_size(ndim)
    if len(view) < size:
        raise WireError(
            f"frame of {len(view)} bytes is shorter than its {ndim}-dimensional header ({size} bytes)"
        )
    shape = struct.unpack_from(f"<{ndim}I", view, _FIXED.size)
    return codec, dtype, tuple(shape), size


def decode_frame(data: bytes | bytearray | memoryview, max_elements: int | None = None) -> torch.Tensor:
    """Decode one frame into a tensor: float32 for float codecs, int64 for ``int64``.

    ``max_elements`` caps the element count (default ``MAX_ELEMENTS``); a frame over it is refused
    before any allocation.
    """
    view = memoryview(data)
    codec, _dtype, shape, size = read_header(view)
    limit = MAX_ELEMENTS if max_elements is None else max_elements
    numel = math.prod(shape)
    if numel > limit:
        raise WireError(f"frame shape {shape} holds {numel} elements, more than the allowed {limit}")
    spread = math.prod(d for d in shape if d)  # an empty tensor's strides still multiply the other sizes
    if spread > max(limit, 1):
        raise WireError(
            f"frame shape {shape} is too large in its non-empty dimensions (over {limit} elements)"
        )
    (body_len,) = _BODY_LEN.unpack_from(view, size - _BODY_LEN.size)
    body = view[size:]
    if body_len != len(body):
        raise WireError(
            f"frame header announces a {body_len}-byte body but {len(body)} bytes follow; "
            "the frame is truncated or has trailing data"
        )
    flat = codec.decode(body, numel)
    return flat.reshape(shape)
