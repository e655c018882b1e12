"""Helpers for the coordinator's integration tests: a tiny chat model with a real tokenizer, a network of
real `worker run` processes and a real `coordinator run` process on 127.0.0.1 against real anvil."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from shardnet.chain.devnet import free_port

REPO = Path(__file__).resolve().parents[2]
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
        vocab_size=EOS_ID + 1, hidden_size=64, intermediate_size=128, num_hidden_layers=NUM_LAYERS,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512, tie_word_embeddings=False,
        eos_token_id=EOS_ID, bos_token_id=None,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).eval()
    model.save_pretrained(folder)
    fast.save_pretrained(folder)


def http_json(method: str, url: str, body: dict[str, Any] | None = None, timeout: float = 10) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


@dataclass
class CoordinatorProc:
    """One `python -m coordinator.cli run` subprocess."""

    key_hex: str
    args: list[str]
    log_path: Path
    port: int
    proc: subprocess.Popen[bytes] | None = None
    env: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> CoordinatorProc:
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1",
               "COORD_TEST_KEY": self.key_hex, **self.env}
        cmd = [sys.executable, "-m", "coordinator.cli", "run", "--key-env", "COORD_TEST_KEY", "--host", "127.0.0.1",
               "--port", str(self.port), *self.args]
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_ready(self, timeout: float = 60.0) -> dict[str, Any]:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"coordinator exited with {self.proc.returncode}:\n{self.log()[-4000:]}")
            try:
                status, body = http_json("GET", self.url + "/health", timeout=2)
                if status == 200:
                    return dict(body)
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.2)
        raise RuntimeError(f"coordinator did not serve within {timeout} s:\n{self.log()[-4000:]}")

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)


def start_coordinator(tmp: Path, key_hex: str, deployment_file: Path, store_dir: Path, *extra: str,
                      name: str = "coordinator", port: int | None = None) -> CoordinatorProc:
    return CoordinatorProc(
        key_hex=key_hex,
        args=["--deployment", str(deployment_file), "--store-dir", str(store_dir), "--data-dir", str(tmp / name),
              "--poll-interval-s", "0.1", "--health-interval-s", "0.5", "--step-timeout-s", "1.5",
              "--commit-wait-s", "15", *extra],
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
