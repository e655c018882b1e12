"""The coordinator's adapter store is bounded in files, bytes and remembered jobs (every paying client adds one)."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save

from coordinator.adapters import AdapterStore


def _lora(seed: int) -> bytes:
    g = torch.Generator().manual_seed(seed)
    return save(
        {
            "lora.0.q_proj.A": torch.randn(4, 32, generator=g),
            "lora.0.q_proj.B": torch.randn(32, 4, generator=g),
        }
    )


def test_remembered_jobs_are_bounded_oldest_forgotten_first() -> None:
    store = AdapterStore(max_jobs=3)
    adapter = store.put(_lora(1))
    for job_id in range(1, 6):
        store.bind(job_id, adapter)
    assert [store.for_job(j) is not None for j in range(1, 6)] == [False, False, True, True, True]
    store.bind(3, adapter)  # bound again: now the newest
    store.bind(6, adapter)
    assert store.for_job(3) is adapter and store.for_job(4) is None


def test_files_are_bounded_in_count_and_size() -> None:
    store = AdapterStore(max_count=2, max_bytes=len(_lora(1)))
    store.put(_lora(1))
    store.put(_lora(2))
    store.put(_lora(1))  # the same file again takes no new slot
    with pytest.raises(OverflowError, match="holds 2 adapters"):
        store.put(_lora(3))
    with pytest.raises(Exception, match="more than"):
        AdapterStore(max_bytes=10).put(_lora(1))
