"""Reading shard files: exact tensors in aligned memory, chunked casts, clear errors on damaged files."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from shardnet.model import ModelError
from shardnet.model.block import read_safetensors

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def mixed_file(tmp_path: Path) -> Path:
    gen = torch.Generator().manual_seed(0)
    tensors = {
        "big": torch.randn(700, 3001, generator=gen),  # larger than one 8 MB cast chunk
        "half": torch.randn(5, 7, generator=gen).half(),
        "brain": torch.randn(3, 3, generator=gen).bfloat16(),
        "ids": torch.arange(10),
        "flags": torch.tensor([True, False, True]),
        "scalar": torch.tensor(2.5),
        "empty": torch.zeros(0, 4),
    }
    path = tmp_path / "mixed.safetensors"
    save_file(tensors, str(path), metadata={"format": "pt"})
    return path


def test_reads_exactly_what_safetensors_reads_into_aligned_memory(mixed_file: Path) -> None:
    expected = load_file(str(mixed_file))
    got = read_safetensors(mixed_file)
    assert got.keys() == expected.keys()
    for name, tensor in got.items():
        assert tensor.dtype == expected[name].dtype and torch.equal(tensor, expected[name]), name
        assert tensor.data_ptr() % 64 == 0 or tensor.numel() == 0, name


def test_casts_floating_tensors_in_chunks_like_to(mixed_file: Path) -> None:
    expected = load_file(str(mixed_file))
    got = read_safetensors(mixed_file, keys={"big", "half", "ids", "flags"}, dtype=torch.bfloat16)
    assert sorted(got) == ["big", "flags", "half", "ids"]
    assert torch.equal(got["big"], expected["big"].to(torch.bfloat16))
    assert torch.equal(got["half"], expected["half"].to(torch.bfloat16))
    assert got["ids"].dtype == torch.int64 and got["flags"].dtype == torch.bool


def test_damaged_files_raise_model_errors(mixed_file: Path, tmp_path: Path) -> None:
    data = mixed_file.read_bytes()
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(data[:-100])
    with pytest.raises(ModelError, match="truncated; fetch the file again"):
        read_safetensors(truncated)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!")
    with pytest.raises(ModelError, match="is not a safetensors file"):
        read_safetensors(garbage)
    with pytest.raises(ModelError, match="is missing; fetch the model's files"):
        read_safetensors(tmp_path / "absent.safetensors")
