"""Where a worker computes (worker.placement): --device and --dtype against the machine and the model's
manifest, and the session memory budget; the real manifest of an imported tiny Llama, no chain needed."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from shardnet.devices import DeviceError
from shardnet.errors import ConfigError
from shardnet.model.block import load_block
from shardnet.span import LayerSpan
from shardnet.store.manifest import Manifest, ManifestError
from worker.config import WorkerConfig, load_config
from worker.placement import CPU_CACHE_BYTES, memory_budget_bytes, place

HAS_GPU = torch.cuda.is_available()


def _cfg(**overrides: object) -> WorkerConfig:
    return load_config(overrides, environ={})


@pytest.mark.parametrize("device", ["auto", "cpu", "cuda", "cuda:0", "cuda:12"])
def test_device_settings_are_accepted(device: str) -> None:
    assert _cfg(device=device).device == device


@pytest.mark.parametrize("device", ["gpu", "cuda:x", "mps", "", "cuda:1:2"])
def test_bad_device_settings_are_named_with_what_is_accepted(device: str) -> None:
    with pytest.raises(ConfigError, match="device.*auto, cpu, cuda or cuda:N"):
        _cfg(device=device)


def test_device_and_dtype_default_to_auto_and_the_device_default() -> None:
    cfg = _cfg()
    assert cfg.device == "auto" and cfg.dtype is None and cfg.max_cache_mb is None
    assert _cfg(dtype="bfloat16").dtype == "bfloat16"


def test_cpu_worker_loads_float32_by_default_and_gets_the_1_gib_budget(
    tiny_llama_store: tuple[Path, str, Manifest],
) -> None:
    store, _cid, manifest = tiny_llama_store
    placed = place(_cfg(device="cpu"), manifest)
    assert placed.device == torch.device("cpu") and placed.dtype == "float32"
    block = load_block(
        store, manifest.to_json(), LayerSpan(0, 2), getattr(torch, placed.dtype), placed.device
    )
    assert block.device == placed.device and block.dtype == torch.float32
    assert memory_budget_bytes(_cfg(device="cpu"), placed.device) == CPU_CACHE_BYTES
    assert memory_budget_bytes(_cfg(device="cpu", max_cache_mb=16), placed.device) == 16 * 2**20


def test_auto_resolves_to_what_torch_sees(tiny_llama_store: tuple[Path, str, Manifest]) -> None:
    _store, _cid, manifest = tiny_llama_store
    placed = place(_cfg(), manifest)
    assert placed.device.type == ("cuda" if HAS_GPU else "cpu")
    assert placed.dtype in (("bfloat16", "float16") if HAS_GPU else ("float32",))


def test_the_manifest_still_refuses_a_dtype_it_does_not_allow(
    tiny_llama_store: tuple[Path, str, Manifest],
) -> None:
    _store, _cid, manifest = tiny_llama_store
    only_bf16 = dataclasses.replace(manifest, worker_dtypes=("bfloat16",))
    with pytest.raises(ManifestError, match="allows workers in bfloat16 only.*--dtype bfloat16"):
        place(_cfg(device="cpu"), only_bf16)  # the CPU default, float32, is not allowed
    with pytest.raises(ManifestError, match="not float16"):
        place(_cfg(device="cpu", dtype="float16"), only_bf16)
    assert place(_cfg(device="cpu", dtype="bfloat16"), only_bf16).dtype == "bfloat16"


@pytest.mark.skipif(HAS_GPU, reason="this machine has a GPU: the refusal is for machines without one")
def test_a_gpu_asked_for_on_a_machine_without_one_is_refused_with_the_fix(
    tiny_llama_store: tuple[Path, str, Manifest],
) -> None:
    _store, _cid, manifest = tiny_llama_store
    for device in ("cuda", "cuda:1"):
        with pytest.raises(DeviceError, match="torch sees no GPU.*--device cpu"):
            place(_cfg(device=device), manifest)
