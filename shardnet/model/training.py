"""Training passes through a frozen decoder block: forward and backward of its layers with client adapters.

The block's own weights never change and never get gradients. What trains is what the client sends
with each step, as named tensors:

- ``lora.{layer}.{proj}.A`` [r, in] and ``lora.{layer}.{proj}.B`` [out, r]: a LoRA adapter of one
  attention projection (``proj`` in ``LORA_TARGETS``); the projection's output becomes
  ``W x + B (A x)`` (fold LoRA's alpha / r into B's initialisation and the learning rate);
- ``prompt.{layer}`` [p, hidden]: a deep prompt, added to the first ``p`` positions of the hidden
  states right before layer ``layer`` runs (the client prepends ``p`` positions to its inputs).

`span_forward` runs the layers only (never the embedding or the head: the client holds those) over
hidden states [batch, n, hidden] without a KV cache; `span_backward` recomputes that forward with
autograd and returns the gradient with respect to the input and to every adapter tensor sent.
The adapters are applied by hooks that read a thread-local, so inference steps of the same block on
the same thread (between training passes) see the plain block.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any
from weakref import WeakSet

import torch
from torch import nn

from shardnet.model.adapters import DecoderAdapter, ModelError
from shardnet.model.device import to_cpu, to_device

if TYPE_CHECKING:
    from shardnet.model.block import Block

#: The attention projections a LoRA adapter may target, per architecture family (module paths in a layer).
LORA_TARGETS: dict[str, tuple[str, ...]] = {"llama": ("q_proj", "k_proj", "v_proj", "o_proj")}
_LORA_KEY = re.compile(r"lora\.(\d+)\.([a-z_]+)\.(A|B)")
_PROMPT_KEY = re.compile(r"prompt\.(\d+)")

_active = threading.local()  # .lora: {(layer, proj): (A, B)}, .prompts: {layer: tensor}
_hooked: WeakSet[nn.Module] = WeakSet()


def lora_targets(block: Block) -> tuple[str, ...]:
    """The projections LoRA can target in `block`'s family (ModelError for families without any)."""
    targets = LORA_TARGETS.get(block.adapter.family)
    if targets is None:
        raise ModelError(
            f"LoRA is supported for the {', '.join(LORA_TARGETS)} family, not {block.adapter.family}; "
            "use --method prompt"
        )
    return targets


def check_adapters(block: Block, adapters: Mapping[str, torch.Tensor], seq_len: int | None = None) -> None:
    """Raise ModelError unless every tensor is a LoRA half or deep prompt of one of `block`'s layers,
    shaped for it, finite, and LoRA halves come in pairs of one rank; deep prompts no longer than `seq_len`."""
    span, hidden = block.span, block.hidden_size
    ranks: dict[tuple[int, str], dict[str, int]] = {}
    prompt_len: int | None = None
    for name, tensor in adapters.items():
        if not tensor.dtype.is_floating_point:
            raise ModelError(f"adapter tensor {name!r} must be float, got {tensor.dtype}")
        if not bool(torch.isfinite(tensor).all()):
            raise ModelError(f"adapter tensor {name!r} holds NaN or infinite values")
        lora, prompt = _LORA_KEY.fullmatch(name), _PROMPT_KEY.fullmatch(name)
        if lora is not None:
            layer, proj, half = int(lora[1]), lora[2], lora[3]
            _check_layer(span.start, span.end, layer, name)
            linear = _projection(block, layer, proj)
            r = int(tensor.shape[0] if half == "A" else tensor.shape[-1])
            want = [r, linear.in_features] if half == "A" else [linear.out_features, r]
            if tensor.dim() != 2 or list(tensor.shape) != want or not 0 < r <= 256:
                raise ModelError(f"{name} must have shape {want} with 0 < r <= 256, got {list(tensor.shape)}")
            ranks.setdefault((layer, proj), {})[half] = r
        elif prompt is not None:
            _check_layer(span.start, span.end, int(prompt[1]), name)
            if tensor.dim() != 2 or tensor.shape[1] != hidden or tensor.shape[0] < 1:
                raise ModelError(f"{name} must have shape [p, {hidden}], got {list(tensor.shape)}")
            if prompt_len is not None and tensor.shape[0] != prompt_len:
                raise ModelError(
                    f"deep prompts must all have one length, got {prompt_len} and {tensor.shape[0]}"
                )
            prompt_len = int(tensor.shape[0])
            if seq_len is not None and prompt_len > seq_len:
                raise ModelError(f"{name} covers {prompt_len} positions but the step has only {seq_len}")
        else:
            raise ModelError(
                f"unknown adapter tensor {name!r}: send lora.<layer>.<proj>.A/B or prompt.<layer>"
            )
    for (layer, proj), halves in ranks.items():
        if set(halves) != {"A", "B"} or halves["A"] != halves["B"]:
            raise ModelError(f"lora.{layer}.{proj} needs both A and B of one rank, got {halves}")


def _check_layer(start: int, end: int, layer: int, name: str) -> None:
    if not start <= layer < end:
        raise ModelError(f"{name} names layer {layer}, outside this block's layers [{start}, {end})")


def _projection(block: Block, layer: int, proj: str) -> nn.Linear:
    if proj not in lora_targets(block):
        raise ModelError(f"LoRA cannot target {proj!r}; targets are {', '.join(lora_targets(block))}")
    module = block.adapter.layer(block.module, layer).get_submodule(f"self_attn.{proj}")
    if not isinstance(module, nn.Linear):
        raise ModelError(f"layer {layer}'s {proj} is a {type(module).__name__}, not a linear projection")
    return module


def prepare_block(block: Block) -> None:
    """Freeze `block`'s weights and install the (inactive until a training pass) adapter hooks, once."""
    if not isinstance(block.adapter, DecoderAdapter):
        raise ModelError(f"training runs through decoder blocks, not a {block.kind} block")
    if block.module in _hooked:
        return
    for p in block.module.parameters():
        p.requires_grad_(False)
    targets = LORA_TARGETS.get(block.adapter.family, ())
    for layer in range(block.span.start, block.span.end):
        layer_module = block.adapter.layer(block.module, layer)
        layer_module.register_forward_pre_hook(_prompt_hook(layer))
        for proj in targets:
            _projection(block, layer, proj).register_forward_hook(_lora_hook(layer, proj))
    _hooked.add(block.module)


def _prompt_hook(layer: int) -> Any:
    def hook(_module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...] | None:
        prompt = getattr(_active, "prompts", {}).get(layer)
        if prompt is None:
            return None
        hidden = args[0]
        p = prompt.shape[0]
        added = torch.cat([hidden[:, :p] + prompt.to(hidden.device, hidden.dtype), hidden[:, p:]], dim=1)
        return (added, *args[1:])

    return hook


def _lora_hook(layer: int, proj: str) -> Any:
    def hook(_module: nn.Module, args: tuple[Any, ...], output: torch.Tensor) -> torch.Tensor | None:
        pair = getattr(_active, "lora", {}).get((layer, proj))
        if pair is None:
            return None
        a, b = pair
        x: torch.Tensor = args[0]
        a, b = a.to(output.device, output.dtype), b.to(output.device, output.dtype)  # no copy when already so
        delta: torch.Tensor = torch.matmul(torch.matmul(x, a.T), b.T)
        return output + delta

    return hook


@contextmanager
def active_adapters(adapters: Mapping[str, torch.Tensor]) -> Iterator[None]:
    """Apply `adapters` to hooked blocks on this thread for the duration of the block."""
    lora: dict[tuple[int, str], tuple[torch.Tensor, torch.Tensor]] = {}
    prompts: dict[int, torch.Tensor] = {}
    for name, tensor in adapters.items():
        match = _LORA_KEY.fullmatch(name)
        if match is not None and match[3] == "A":
            key = (int(match[1]), match[2])
            lora[key] = (tensor, adapters[f"lora.{match[1]}.{match[2]}.B"])
        elif (pm := _PROMPT_KEY.fullmatch(name)) is not None:
            prompts[int(pm[1])] = tensor
    _active.lora, _active.prompts = lora, prompts
    try:
        yield
    finally:
        _active.lora, _active.prompts = {}, {}


def span_forward(block: Block, hidden: torch.Tensor, adapters: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """The block's layers over hidden states [batch, n, hidden], with `adapters`; autograd follows
    whatever requires grad (call under torch.no_grad() for a plain forward). Inputs and the output are on
    the CPU, the compute on the block's device (the moves are part of the autograd graph)."""
    adapter = block.adapter
    if not isinstance(adapter, DecoderAdapter):
        raise ModelError(f"training runs through decoder blocks, not a {block.kind} block")
    prepare_block(block)
    n = int(hidden.shape[1])
    position_ids = torch.arange(n, device=block.device).unsqueeze(0)
    on_device = {name: to_device(tensor, block.device) for name, tensor in adapters.items()}
    with active_adapters(on_device):
        cache = adapter.new_cache(block.config)  # a throwaway cache: the layers' call signature needs one
        hidden = to_device(hidden, block.device).to(block.dtype)
        return to_cpu(adapter.run_layers(block.module, hidden, block.span, cache, position_ids))


def span_backward(
    block: Block,
    hidden: torch.Tensor,
    adapters: Mapping[str, torch.Tensor],
    grad_output: torch.Tensor,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Recompute `span_forward(block, hidden, adapters)` with autograd and pull `grad_output` back:
    returns (gradient w.r.t. `hidden`, {adapter name: its gradient})."""
    with torch.enable_grad():
        x = hidden.detach().clone().requires_grad_(True)
        params = {k: v.detach().clone().requires_grad_(True) for k, v in adapters.items()}
        out = span_forward(block, x, params)
        grads = torch.autograd.grad(
            out, [x, *params.values()], grad_outputs=grad_output.to(out.dtype), allow_unused=True
        )
    grad_in = grads[0] if grads[0] is not None else torch.zeros_like(x)
    named = {
        name: (g if g is not None else torch.zeros_like(params[name]))
        for name, g in zip(params, grads[1:], strict=True)
    }
    return grad_in.detach(), {k: v.detach() for k, v in named.items()}
