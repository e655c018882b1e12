"""The models a coordinator serves: on-chain record, manifest and tokenizer, loaded once per model id.

The coordinator needs no weights, only the manifest (number of layers, HF config) and the tokenizer
files, which it takes from its store folder or, when missing, downloads (verified by CID) from the
workers that serve the model.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shardnet.chain.registry import ModelInfo
from shardnet.errors import ShardnetError
from shardnet.store.fetch import FetchError, ensure_file
from shardnet.store.local import LocalStore
from shardnet.store.manifest import Manifest, load_manifest, tokenizer_folder

log = logging.getLogger(__name__)


class ModelUnavailable(ShardnetError):
    """A model's manifest or tokenizer could not be found in the store or at any worker."""


@dataclass(frozen=True)
class ServedModel:
    info: ModelInfo
    manifest: Manifest
    tokenizer: Any  # a transformers PreTrainedTokenizerBase
    eos_ids: frozenset[int]

    @property
    def num_layers(self) -> int:
        return self.info.num_layers

    def encode(self, text: str) -> list[int]:
        """Token ids of a prompt, with the tokenizer's special tokens (e.g. BOS) unless the text already
        starts with its BOS token (a chat template's output usually does)."""
        bos = getattr(self.tokenizer, "bos_token", None)
        add = not (bos and text.startswith(bos))
        return list(self.tokenizer(text, add_special_tokens=add)["input_ids"])

    def decode(self, ids: Sequence[int]) -> str:
        return str(self.tokenizer.decode(list(ids), skip_special_tokens=True))

    def chat_prompt(self, messages: list[dict[str, str]]) -> str:
        """The prompt text for chat `messages`, by the tokenizer's chat template."""
        if getattr(self.tokenizer, "chat_template", None):
            return str(
                self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            )
        return "".join(f"{m.get('role', 'user')}: {m.get('content', '')}\n" for m in messages) + "assistant:"


def _ensure_file(store: LocalStore, cid: str, size: int | None, peers: Sequence[str], label: str) -> Path:
    """A verified copy of `cid` in the store (re-hashed when already there), fetched from the workers if needed."""
    try:
        return ensure_file(cid, list(peers), store.root, size=size, label=label)
    except FetchError as exc:
        raise ModelUnavailable(
            f"{exc}; start a worker of this model or copy its files into --store-dir"
        ) from exc


def load_model(info: ModelInfo, store_dir: Path, peers: Sequence[str]) -> ServedModel:
    """Load a model's manifest and tokenizer (fetching missing files from `peers`)."""
    from transformers import AutoTokenizer

    store = LocalStore(store_dir).ensure()
    _ensure_file(store, info.manifest_cid, None, peers, "manifest")
    manifest = load_manifest(store.root, info.manifest_cid)
    if not manifest.tokenizer:
        raise ModelUnavailable(
            f"model {info.name} (manifest {info.manifest_cid}) ships no tokenizer files; re-import it with its tokenizer"
        )
    for t in manifest.tokenizer:
        _ensure_file(store, t.cid, t.size, peers, t.name)
    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_folder(store.root, manifest)))
    eos: set[int] = set()
    for value in (manifest.config.get("eos_token_id"), tokenizer.eos_token_id):
        if isinstance(value, int):
            eos.add(value)
        elif isinstance(value, list):
            eos.update(int(v) for v in value)
    log.info(
        "model %d (%s): %d layers, tokenizer %s, eos %s",
        info.model_id,
        info.name,
        info.num_layers,
        type(tokenizer).__name__,
        sorted(eos),
    )
    return ServedModel(info, manifest, tokenizer, frozenset(eos))


class ModelCatalog:
    """ServedModel by on-chain model id, loaded on first use: once, under a lock, whatever the number of threads
    asking at the same time (concurrent first imports of transformers' tokenizer classes fail with ImportError,
    and 16 concurrent first requests used to get 500 for it); the callers wait for the one load."""

    def __init__(
        self, fetch_info: Callable[[int], ModelInfo], store_dir: Path, peers: Callable[[], list[str]]
    ) -> None:
        self._fetch_info = fetch_info
        self._store_dir = store_dir
        self._peers = peers
        self._models: dict[int, ServedModel] = {}
        self._loading = threading.Lock()  # one load at a time (they share transformers' lazy imports)

    def get(self, model_id: int) -> ServedModel:
        model = self._models.get(model_id)
        if model is not None:
            return model
        with self._loading:
            model = self._models.get(model_id)  # loaded while this thread waited
            if model is None:
                model = load_model(self._fetch_info(model_id), self._store_dir, self._peers())
                self._models[model_id] = model
        return model
