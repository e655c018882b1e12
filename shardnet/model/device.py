"""Where a block computes: parsing `--device`, the default weight dtype per device, device memory.

A block's weights and its sessions' KV caches live on its device; what enters and leaves a block (token
ids, hidden states, logits) is on the CPU, so the wire format and everything that hashes or encodes
outputs never depend on the device (docs/gpu.md).

`resolve_device` and `choose_dtype` are pure functions of what they are told about the machine, so they
are tested with exact answers on a machine without a GPU; `machine_device` and `worker_dtype` ask torch.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from shardnet.devices import DeviceError, check_device_spec, cuda_index

__all__ = ["DeviceError", "check_device_spec"]

#: weight dtypes a worker may load (the manifest's worker_dtypes may narrow them)
DTYPE_NAMES = ("float32", "float16", "bfloat16")
CPU = torch.device("cpu")


def resolve_device(spec: str, *, cuda_available: bool, cuda_count: int) -> torch.device:
    """The device `spec` names on a machine where CUDA is (not) available with `cuda_count` GPUs.

    auto: cuda:0 when CUDA is available, else the CPU. cuda and cuda:N need a GPU (N < cuda_count).
    """
    spec = check_device_spec(spec)
    if spec == "cpu" or (spec == "auto" and not cuda_available):
        return CPU
    if spec == "auto":
        return torch.device("cuda", 0)
    if not cuda_available or cuda_count < 1:
        raise DeviceError(
            f"--device {spec}: torch sees no GPU on this machine (torch {torch.__version__}, CUDA build "
            f"{torch.version.cuda or 'none'}); install a CUDA build of torch and the NVIDIA driver, check "
            "nvidia-smi and CUDA_VISIBLE_DEVICES, or run with --device cpu"
        )
    index = cuda_index(spec) or 0
    if index >= cuda_count:
        raise DeviceError(
            f"--device {spec}: this machine has {cuda_count} GPU(s), cuda:0 to cuda:{cuda_count - 1}; "
            f"pick one of those (CUDA_VISIBLE_DEVICES renumbers them from 0)"
        )
    return torch.device("cuda", index)


def prepare_cuda_attention() -> None:
    """Switch off PyTorch's cuDNN scaled-dot-product attention kernel in this process (the flash and
    memory-efficient kernels stay).

    The cuDNN kernel builds an execution plan for every new key length, and a decode step's key length is new
    at every step: measured on an H200 (torch 2.11, SmolLM2 bf16, `scripts/step_timing.py --device cuda`), a
    10-layer block's steady decode step took 40.7 ms with it and 5.5 ms without it (unsplit transformers: 16.9
    ms for 30 layers), and 3 workers sharing the GPU went from 187 to 52 ms per token at one session
    (docs/gpu.md). Called whenever a block is placed on a GPU; a no-op where torch has no such switch.
    """
    switch = getattr(torch.backends.cuda, "enable_cudnn_sdp", None)
    if switch is not None:
        switch(False)


def machine_device(spec: str) -> torch.device:
    """`resolve_device` on this machine, as torch sees it."""
    available = bool(torch.cuda.is_available())
    return resolve_device(
        spec, cuda_available=available, cuda_count=torch.cuda.device_count() if available else 0
    )


def preferred_dtypes(device: torch.device, *, bf16_supported: bool) -> tuple[str, ...]:
    """The weight dtypes a worker on `device` would load, best first: on a GPU half precision (bfloat16
    where the GPU has it, else float16) then float32; on the CPU float32 only (as before GPUs)."""
    if device.type == "cpu":
        return ("float32",)
    half = "bfloat16" if bf16_supported else "float16"
    return (half, "float32")


def choose_dtype(
    requested: str | None,
    device: torch.device,
    *,
    bf16_supported: bool,
    allowed: Sequence[str] = DTYPE_NAMES,
) -> str:
    """The weight dtype to load: `requested` (--dtype) if given, else the device's preferred dtype that the
    model's manifest allows (`allowed`: its worker_dtypes). A requested dtype the manifest does not allow is
    the caller's to refuse (`Manifest.check_worker_dtype`): it is returned as asked."""
    if requested is not None:
        if requested not in DTYPE_NAMES:
            raise DeviceError(f"--dtype {requested!r} is not one of {', '.join(DTYPE_NAMES)}")
        return requested
    preferred = preferred_dtypes(device, bf16_supported=bf16_supported)
    return next((d for d in preferred if d in allowed), preferred[0])


def worker_dtype(requested: str | None, device: torch.device, allowed: Sequence[str] = DTYPE_NAMES) -> str:
    """`choose_dtype` on this machine (torch says whether the GPU has bfloat16)."""
    return choose_dtype(requested, device, bf16_supported=bf16_supported(device), allowed=allowed)


def bf16_supported(device: torch.device) -> bool:
    """Whether `device` computes in bfloat16 natively (a GPU of compute capability 8.0 or later)."""
    if device.type != "cuda":
        return True
    with torch.cuda.device(device):
        return bool(torch.cuda.is_bf16_supported())


def free_device_bytes(device: torch.device) -> int | None:
    """Free memory on a GPU in bytes (torch.cuda.mem_get_info), None for the CPU."""
    if device.type != "cuda":
        return None
    free, _total = torch.cuda.mem_get_info(device)
    return int(free)


def device_budget_bytes(free_bytes: int, fraction: float) -> int:
    """The KV-cache budget of a GPU worker: `fraction` of the device memory free after its weights loaded."""
    if not 0 < fraction <= 1:
        raise DeviceError(f"the GPU memory fraction must lie in (0, 1], got {fraction}")
    return int(free_bytes * fraction)


def to_device(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """`x` on `device` (the same tensor if it is there already: the CPU path copies nothing)."""
    return x if x.device == device else x.to(device)


def to_cpu(x: torch.Tensor) -> torch.Tensor:
    """`x` on the CPU, for encoding, hashing and fingerprints (the same tensor if it is there already)."""
    return x if x.device.type == "cpu" else x.cpu()
