"""Device names as settings (`--device auto|cpu|cuda|cuda:N`), checked without importing torch.

What a name resolves to on a machine, and the dtypes and memory that follow, are in
`shardnet.model.device` (which imports torch).
"""

from __future__ import annotations

import re

from shardnet.errors import ConfigError

#: what `--device` accepts
DEVICE_CHOICES = "auto, cpu, cuda or cuda:N"
_DEVICE_SPEC = re.compile(r"auto|cpu|cuda(?::(\d{1,3}))?")


class DeviceError(ConfigError):
    """A `--device` that is malformed or names a device this machine does not have."""


def check_device_spec(spec: str) -> str:
    """`spec` (stripped) if it is auto, cpu, cuda or cuda:N, else DeviceError saying what is accepted."""
    if not isinstance(spec, str) or _DEVICE_SPEC.fullmatch(spec.strip()) is None:
        raise DeviceError(f"device {spec!r} is not one of {DEVICE_CHOICES} (e.g. --device cuda:0)")
    return spec.strip()


def cuda_index(spec: str) -> int | None:
    """The GPU index a checked spec names (cuda: 0, cuda:N: N), None for auto and cpu."""
    spec = check_device_spec(spec)
    if not spec.startswith("cuda"):
        return None
    return int(spec.partition(":")[2] or 0)
