"""Where a worker's block runs and how much memory its sessions may take there (docs/gpu.md).

`--device` (auto: the first GPU torch sees, else the CPU) picks the device; the weight dtype is `--dtype`,
else the device's default that the model's manifest allows (`shardnet.model.device.choose_dtype`); the
session memory budget is `--max-cache-mb`, else 1 GiB on the CPU and, on a GPU, `--gpu-memory-fraction` of
the device memory still free once the weights are loaded.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from shardnet.model.device import device_budget_bytes, free_device_bytes, machine_device, worker_dtype
from worker.config import WorkerConfig

if TYPE_CHECKING:
    import torch

    from shardnet.store.manifest import Manifest

log = logging.getLogger(__name__)

CPU_CACHE_BYTES = 1 << 30  # the CPU default of max_cache_mb (1024 MiB), as before GPUs


@dataclass(frozen=True)
class Placement:
    device: torch.device
    dtype: str  # "float32", "float16" or "bfloat16"


def place(cfg: WorkerConfig, manifest: Manifest) -> Placement:
    """The device and weight dtype of this worker's block; refuses (ManifestError) a dtype the model's
    manifest does not allow, before anything goes on chain, and (DeviceError) a GPU this machine lacks."""
    device = machine_device(cfg.device)
    dtype = worker_dtype(cfg.dtype, device, manifest.allowed_worker_dtypes())
    manifest.check_worker_dtype(dtype)  # refused at announce, not slashed
    if cfg.dtype is None:
        log.info("computing on %s in %s (the default there; --dtype overrides)", device, dtype)
    else:
        log.info("computing on %s in %s", device, dtype)
    return Placement(device, dtype)


def memory_budget_bytes(cfg: WorkerConfig, device: torch.device) -> int:
    """The bytes all sessions' KV caches and kept outputs may take (call once the block is loaded)."""
    if cfg.max_cache_mb is not None:
        return int(cfg.max_cache_mb * 2**20)
    free = free_device_bytes(device)
    if free is None:
        return CPU_CACHE_BYTES
    budget = device_budget_bytes(free, cfg.gpu_memory_fraction)
    log.info(
        "session memory budget: %.0f MiB (%.0f%% of %.0f MiB free on %s; --max-cache-mb overrides)",
        budget / 2**20,
        100 * cfg.gpu_memory_fraction,
        free / 2**20,
        device,
    )
    return budget
