"""Helpers for the coordinator's integration tests: a tiny chat model with a real tokenizer, a network of
real `worker run` processes and a real `coordinator run` process on 127.0.0.1 against real anvil."""

from __future__ import annotations

import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from aiohttp import web

from shardnet.chain.devnet import free_port
from shardnet.http_json import request_json
from tests.service_proc import ServiceProc

EOS_ID = 256
NUM_LAYERS = 6


def build_tiny_chat_model(folder: Path) -> None:
    """A random 6-layer Llama whose vocabulary is the 256 bytes plus <|eos|>, with a byte-level tokenizer
    (and a chat template) saved beside it, so it imports like any Hugging Face checkpoint."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {ch: i for i, ch in enumerate(alphabet)}
    vocab["<|eos|>"] = EOS_ID
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|eos|>")
    fast.chat_template = "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}\n{% endfor %}<assistant>"
    config = LlamaConfig(
        vocab_size=EOS_ID + 1,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=NUM_LAYERS,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=False,
        eos_token_id=EOS_ID,
        bos_token_id=None,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).eval()
    model.save_pretrained(folder)
    fast.save_pretrained(folder)


def http_json(
    method: str, url: str, body: dict[str, Any] | None = None, timeout: float = 10
) -> tuple[int, Any]:
    return request_json(method, url, body, timeout=timeout)


@dataclass
class CoordinatorProc(ServiceProc):
    """One `python -m coordinator.cli run` subprocess."""

    role: ClassVar[str] = "coordinator"
    module: ClassVar[str] = "coordinator.cli"
    key_var: ClassVar[str] = "COORD_TEST_KEY"

    key: str
    args: list[str]
    log_path: Path
    port: int
    proc: subprocess.Popen[bytes] | None = None
    env: dict[str, str] = field(default_factory=dict)

    def key_hex(self) -> str:
        return self.key


def start_coordinator(
    tmp: Path,
    key_hex: str,
    deployment_file: Path,
    store_dir: Path,
    *extra: str,
    name: str = "coordinator",
    port: int | None = None,
) -> CoordinatorProc:
    return CoordinatorProc(
        key=key_hex,
        args=[
            "--deployment",
            str(deployment_file),
            "--store-dir",
            str(store_dir),
            "--data-dir",
            str(tmp / name),
            "--poll-interval-s",
            "0.1",
            "--health-interval-s",
            "0.5",
            "--step-timeout-s",
            "1.5",
            *extra,
        ],
        log_path=tmp / f"{name}.log",
        port=port or free_port(),
    ).start()


def wait_for(predicate: Any, timeout: float, what: str, interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


async def serve_on_kernel_port(runner: web.AppRunner) -> int:
    """Starts an app runner on 127.0.0.1, on a port the kernel picks as it binds; returns the port. A port chosen
    earlier with free_port can meanwhile become the local port of an outgoing connection (a CI run failed so)."""
    sock = socket.create_server(("127.0.0.1", 0))
    await web.SockSite(runner, sock).start()
    return int(sock.getsockname()[1])
