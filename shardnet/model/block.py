"""A layer block: the modules of layers [start, end) of one model, built on meta, loaded from safetensors.

`load_block` reads the files of a published model (a manifest and a folder of files named by CID);
`load_block_from_parts` reads the folder `save_parts` wrote (files by name). Both read only the
span's files, and of those only the tensors the span's modules have, so memory grows with the span.
The first block also holds the embedding, the last the final norm and head.
"""

from __future__ import annotations

import io
import json
import logging
import struct
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from shardnet.model.adapters import (
    Adapter,
    DecoderAdapter,
    EncoderAdapter,
    ModelError,
    config_from_dict,
    get_adapter,
)
from shardnet.model.device import CPU, prepare_cuda_attention, to_cpu, to_device
from shardnet.model.export import part_file_name
from shardnet.span import LayerSpan

if TYPE_CHECKING:
    from transformers import PretrainedConfig

    from shardnet.model.session import BlockSession

logger = logging.getLogger(__name__)


class Block:
    """Layers `span` of a model, ready to run. Decoders run in sessions, encoders and ViT in `forward`."""

    def __init__(
        self,
        adapter: Adapter,
        config: PretrainedConfig,
        span: LayerSpan,
        module: nn.Module,
        dtype: torch.dtype,
        device: torch.device = CPU,
    ) -> None:
        self.adapter = adapter
        self.config = config
        self.span = span
        self.module = module  # the pruned HF model: parameters keep their HF state-dict names
        self.dtype = dtype
        # weights and KV caches; inputs and outputs stay on the CPU (shardnet.model.device)
        self.device = device
        self.num_layers = adapter.num_layers(config)
        self.is_first = span.is_first()
        self.is_last = span.is_last(self.num_layers)
        self.kind = adapter.kind
        self.hidden_size = adapter.hidden_size(config)
        vocab = getattr(config, "vocab_size", None)
        self.vocab_size: int | None = int(vocab) if vocab is not None else None

    def __repr__(self) -> str:
        where = f"{self.dtype}, {self.device}"
        return f"Block({self.config.model_type}, layers {self.span} of {self.num_layers}, {where})"

    def view(self, span: LayerSpan) -> Block:
        """This block run as layers `span` only, a span within its own: the same modules and weights, first or last
        as `span` is (it embeds token ids only when `span` starts at layer 0, applies the head only when it ends at
        the model's last layer, and otherwise takes and gives hidden states). A verifier checks a hop of a narrower
        span with it (`shardnet.verify.package.judge`). `span` == this block's span: this block itself."""
        if span == self.span:
            return self
        if not self.span.covers(span):
            raise ModelError(f"layers {span} are not within this block's {self.span}")
        return Block(self.adapter, self.config, span, self.module, self.dtype, self.device)

    def parameter_names(self) -> set[str]:
        """The HF state-dict names of the parameters this block holds."""
        return {name for name, _ in self.module.named_parameters()}

    def new_session(self, max_length: int | None = None) -> BlockSession:
        """A KV-cache session of a decoder block; `max_length` defaults to the model's position limit."""
        from shardnet.model.session import BlockSession

        if not isinstance(self.adapter, DecoderAdapter):
            raise ModelError(
                f"a {self.kind} block runs in one forward pass: call block.forward(x), not sessions"
            )
        limit = getattr(self.config, "max_position_embeddings", None)
        if max_length is None:
            max_length = limit
        elif limit is not None and max_length > limit:
            raise ModelError(f"max_length {max_length} exceeds the model's {limit} positions")
        return BlockSession(self, max_length)

    def forward(self, x: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Encoders and ViT: input ids / pixel values (first block) or hidden states -> next input or output.

        `attention_mask` is the HF 2D padding mask [batch, n]; every block of a chain needs the same one.
        The last block returns float32 (see the family's adapter module for what it returns).
        Inputs and outputs are on the CPU whatever the block's device.
        """
        adapter = self.adapter
        if not isinstance(adapter, EncoderAdapter):
            raise ModelError(
                "a decoder block runs in KV-cache sessions: use block.new_session().step(x, pos)"
            )
        self.check_input(x)
        with torch.inference_mode():
            x = to_device(x, self.device)
            mask = None if attention_mask is None else to_device(attention_mask, self.device)
            hidden = adapter.embed(self.module, x) if self.is_first else x.to(self.dtype)
            hidden = adapter.run_layers(self.module, hidden, self.span, mask)
            if self.is_last:
                return to_cpu(adapter.output(self.module, hidden).float())
            return to_cpu(hidden)

    __call__ = forward

    def check_input(self, x: torch.Tensor) -> None:
        """Raise ModelError unless `x` is what this block takes (ids, pixels or hidden states)."""
        if not isinstance(x, torch.Tensor):
            raise ModelError(f"block input must be a torch.Tensor, got {type(x).__name__}")
        if self.is_first and self.kind == "vision":
            if x.dim() != 4 or not x.is_floating_point():
                raise ModelError(
                    f"the first ViT block takes float pixel values [batch, c, h, w], got {_desc(x)}"
                )
        elif self.is_first:
            if x.dim() != 2 or x.dtype != torch.int64 or x.shape[1] == 0:
                raise ModelError(f"the first block takes int64 token ids [batch, n>0], got {_desc(x)}")
            if self.vocab_size is not None and (int(x.min()) < 0 or int(x.max()) >= self.vocab_size):
                raise ModelError(
                    f"token ids must lie in [0, {self.vocab_size}), got {int(x.min())}..{int(x.max())}"
                )
        elif x.dim() != 3 or not x.is_floating_point() or x.shape[2] != self.hidden_size or x.shape[1] == 0:
            raise ModelError(
                f"block {self.span} takes float hidden states [batch, n>0, {self.hidden_size}], got {_desc(x)}"
            )
        if self.kind == "decoder" and x.shape[0] != 1:
            raise ModelError(f"decoder sessions run one sequence: batch must be 1, got {x.shape[0]}")


def _desc(x: torch.Tensor) -> str:
    return f"{x.dtype} {list(x.shape)}"


# ---------------------------------------------------------------------- loading
def load_block(
    store_dir: str | Path,
    manifest: Mapping[str, Any],
    span: LayerSpan,
    dtype: torch.dtype = torch.float32,
    device: torch.device = CPU,
) -> Block:
    """Build layers `span` of a published model from its manifest; files are at `store_dir / cid`.

    The caller verifies CIDs (shardnet.store) before this reads anything. The weights end on `device`.
    """
    config = config_from_dict(manifest["config"])
    adapter = get_adapter(config.model_type)
    declared = manifest.get("num_layers")
    if declared is not None and int(declared) != adapter.num_layers(config):
        raise ModelError(f"manifest says {declared} layers, its config {adapter.num_layers(config)}")
    paths = span_files(manifest["files"], span, adapter.num_layers(config), Path(store_dir))
    return _build(adapter, config, span, paths, dtype, device)


def load_block_from_parts(
    parts_dir: str | Path,
    config: Mapping[str, Any] | PretrainedConfig,
    span: LayerSpan,
    dtype: torch.dtype = torch.float32,
    device: torch.device = CPU,
) -> Block:
    """Build layers `span` from the folder that `save_parts` wrote (files by name), weights on `device`."""
    hf_config = config_from_dict(config)
    adapter = get_adapter(hf_config.model_type)
    num_layers = adapter.num_layers(hf_config)
    span.check_within(num_layers)
    names = [part_file_name("layer", i) for i in range(span.start, span.end)]
    if span.is_first():
        names.insert(0, part_file_name("embed"))
    if span.is_last(num_layers):
        names.append(part_file_name("head"))
    return _build(adapter, hf_config, span, [Path(parts_dir) / n for n in names], dtype, device)


def span_files(
    files: Sequence[Mapping[str, Any]], span: LayerSpan, num_layers: int, root: Path
) -> list[Path]:
    """The paths (`root / cid`) of the manifest files that layers `span` need, checking full coverage."""
    span.check_within(num_layers)
    chosen: list[Path] = []
    covered: set[int] = set()
    parts = {"embed": span.is_first(), "head": span.is_last(num_layers)}
    for entry in files:
        part = entry["part"]
        if part in parts:
            if parts[part]:
                chosen.append(root / entry["cid"])
                parts[part] = False  # found
            continue
        if part != "layer":
            raise ModelError(f"manifest file {entry.get('name')!r} has an unknown part {part!r}")
        start, end = int(entry["start"]), int(entry["end"])
        if end <= span.start or start >= span.end:
            continue
        if start < span.start or end > span.end:
            raise ModelError(
                f"manifest file {entry.get('name')!r} holds layers [{start}, {end}), across span {span}"
            )
        chosen.append(root / entry["cid"])
        covered.update(range(start, end))
    missing = [p for p, wanted in parts.items() if wanted] + [
        f"layer {i}" for i in range(span.start, span.end) if i not in covered
    ]
    if missing:
        raise ModelError(
            f"the manifest lacks files for {', '.join(missing)} of span {span}; re-import the model"
        )
    return chosen


def load_tensors(module: nn.Module, paths: Sequence[Path], dtype: torch.dtype) -> None:
    """Assign `module` (parameters on meta) the tensors it names, read from `paths`, cast to `dtype`."""
    expected = set(module.state_dict().keys())
    state: dict[str, torch.Tensor] = {}
    for path in paths:
        state.update(read_safetensors(path, expected, dtype))
    missing = sorted(expected - state.keys())
    if missing:
        shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise ModelError(f"{len(missing)} tensors not found in the shard files: {shown}")
    module.load_state_dict(state, strict=True, assign=True)
    left = [n for n, t in [*module.named_parameters(), *module.named_buffers()] if t.is_meta]
    if left:
        raise ModelError(f"tensors left without data after loading: {left[:5]}")


_SAFETENSORS_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool,
}  # fmt: skip


def read_safetensors(
    path: Path, keys: Collection[str] | None = None, dtype: torch.dtype | None = None
) -> dict[str, torch.Tensor]:
    """Read tensors (all, or those named in `keys`) of a safetensors file into fresh memory.

    Floating tensors are cast to `dtype` if given, a few MB at a time (no full-size temporary copy).

    Not memory-mapped on purpose: each tensor is read into its own allocation, so a block's memory is
    exactly its tensors, a shard file may be replaced while a worker runs, and every weight has the
    allocator's 64-byte alignment (CPU GEMM kernels round differently on misaligned operands, and
    blocks must reproduce the unsplit model bitwise).
    """
    if not path.is_file():
        raise ModelError(f"shard file {path} is missing; fetch the model's files into the store first")
    with open(path, "rb") as f:
        try:
            (header_len,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(header_len))
        except (struct.error, ValueError) as exc:
            raise ModelError(f"{path} is not a safetensors file ({exc}); fetch it again") from exc
        start = 8 + header_len
        tensors: dict[str, torch.Tensor] = {}
        for name, info in header.items():
            if name == "__metadata__" or (keys is not None and name not in keys):
                continue
            stored = _SAFETENSORS_DTYPES.get(info["dtype"])
            if stored is None:
                raise ModelError(f"{path}: tensor {name} has dtype {info['dtype']}, which blocks cannot load")
            begin, end = info["data_offsets"]
            wanted = dtype if dtype is not None and stored.is_floating_point else stored
            tensor = torch.empty(info["shape"], dtype=wanted)
            if tensor.numel() * stored.itemsize != end - begin:
                raise ModelError(
                    f"{path}: tensor {name}'s shape does not match its bytes; fetch the file again"
                )
            f.seek(start + begin)
            _read_into(f, tensor.reshape(-1), stored, f"{path}: tensor {name}")
            tensors[name] = tensor
    return tensors


_CHUNK_BYTES = 8 << 20


def _read_into(f: io.BufferedIOBase, out: torch.Tensor, stored: torch.dtype, what: str) -> None:
    """Fill the flat tensor `out` from `f`, whose bytes hold `out.numel()` values of dtype `stored`."""
    if out.dtype == stored:
        chunks = [(out, out)]
    else:
        step = max(1, _CHUNK_BYTES // stored.itemsize)
        scratch = torch.empty(min(step, out.numel()), dtype=stored)
        chunks = [(scratch[: len(piece)], piece) for piece in torch.split(out, step)]
    for buffer, target in chunks:
        raw = buffer.view(torch.uint8).numpy()
        if f.readinto(raw.data) != raw.nbytes:  # .data: the memoryview (typed as a buffer)
            raise ModelError(f"{what} is truncated; fetch the file again")
        if target is not buffer:
            target.copy_(buffer)


def _build(
    adapter: Adapter,
    config: PretrainedConfig,
    span: LayerSpan,
    paths: Sequence[Path],
    dtype: torch.dtype,
    device: torch.device = CPU,
) -> Block:
    module = adapter.build_span(config, span)
    load_tensors(module, paths, dtype)
    if (
        device.type != "cpu"
    ):  # read on the CPU (aligned, chunked casts), then moved once: the CPU copy is freed
        as_module: nn.Module = module  # (PreTrainedModel.to is typed for dtypes only)
        as_module.to(device)
        if device.type == "cuda":
            prepare_cuda_attention()
    logger.debug("built %s layers %s from %d files on %s", config.model_type, span, len(paths), device)
    return Block(adapter, config, span, module, dtype, device)
