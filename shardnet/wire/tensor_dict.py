"""Named float32 tensors in one body (a safetensors file): how training steps travel to and from workers.

`encode_tensors` writes float32, contiguous; `decode_tensors` raises `WireError` for a body that is not a
safetensors file or holds a tensor that is not float32 (the Rust parser checks every offset and length).
"""

from __future__ import annotations

import torch
from safetensors import SafetensorError
from safetensors.torch import load, save

from shardnet.errors import WireError


def encode_tensors(tensors: dict[str, torch.Tensor]) -> bytes:
    """Named tensors as a safetensors file of float32 tensors."""
    return save({k: v.detach().to("cpu", torch.float32).contiguous() for k, v in tensors.items()})


def decode_tensors(body: bytes) -> dict[str, torch.Tensor]:
    """The float32 tensors of a safetensors body, by name."""
    if not body:
        raise WireError("empty body: send a safetensors file of named float32 tensors")
    try:
        tensors = load(body)
    except (SafetensorError, ValueError, RuntimeError) as exc:
        raise WireError(f"the body is not a safetensors file ({exc})") from exc
    for name, tensor in tensors.items():
        if tensor.dtype != torch.float32:
            raise WireError(f"tensor {name!r} is {tensor.dtype}: send float32 tensors")
    return tensors
