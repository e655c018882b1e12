"""What makes `shardnet model import` reproducible and incremental.

- `normalize_tokenizer_config`: transformers writes the loading options it was given, some of them set by
  environment variables (HF_HUB_OFFLINE gives `local_files_only: true`), and local paths into
  tokenizer_config.json; they are dropped, so the manifest's CID depends only on the model.
- `source_key`, `cached_import`, `record_import`: the store remembers which manifest a source (its bytes, the
  dtype and the name) was imported as; importing it again, while the manifest and every file it names are
  still stored, returns that manifest at once instead of loading and re-exporting the weights.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

from shardnet.errors import ShardnetError
from shardnet.store.local import LocalStore
from shardnet.store.manifest import Manifest, load_manifest

log = logging.getLogger(__name__)

#: tokenizer_config.json keys that record how a tokenizer was loaded (environment, cache, paths), not what it is.
LOADING_KEYS = frozenset(
    {
        "local_files_only",
        "cache_dir",
        "token",
        "use_auth_token",
        "force_download",
        "resume_download",
        "proxies",
        "revision",
        "subfolder",
        "_commit_hash",
        "name_or_path",
        "_from_auto",
        "trust_remote_code",
    }
)
#: Bump when the way sources become manifests changes, so older records are not reused.
IMPORT_FORMAT = "shardnet-import-1"
_CHUNK = 1 << 20


def normalize_tokenizer_config(path: Path) -> None:
    """Drop `LOADING_KEYS` from a tokenizer_config.json and rewrite it in one layout, in place (other files are
    left alone)."""
    if path.name != "tokenizer_config.json" or not path.is_file():
        return
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        return
    kept = {k: v for k, v in data.items() if k not in LOADING_KEYS}
    # one layout whatever wrote it, so equal settings give equal bytes
    path.write_text(json.dumps(kept, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _hash_file(digest: hashlib._Hash, path: Path) -> None:
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)


def source_key(source: Path, dtype: str, name: str | None) -> str:
    """A hash of everything an import's result depends on: the source's bytes (a file, or every file of a
    folder with its relative name), the dtype, the name and IMPORT_FORMAT."""
    digest = hashlib.sha256(json.dumps([IMPORT_FORMAT, dtype, name]).encode())
    files = [source] if source.is_file() else sorted(p for p in source.rglob("*") if p.is_file())
    for path in files:
        relative = path.name if path == source else str(path.relative_to(source))
        digest.update(f"\0{relative}\0{path.stat().st_size}\0".encode())
        _hash_file(digest, path)
    return digest.hexdigest()


def _record_path(store: LocalStore, key: str) -> Path:
    return store.root / ".imports" / f"{key}.json"


def cached_import(store: LocalStore, key: str) -> tuple[str, Manifest] | None:
    """The manifest this source was imported as, if it and every file it names are still in the store."""
    record = _record_path(store, key)
    try:
        cid = str(json.loads(record.read_text())["manifest"])
        manifest = load_manifest(store.root, cid)
    except (OSError, ValueError, KeyError, ShardnetError) as exc:
        if record.exists():
            log.info("ignoring the import record %s: %s", record.name, exc)
        return None
    named = [(f.name, f.cid) for f in manifest.files] + [(t.name, t.cid) for t in manifest.tokenizer]
    missing = [name for name, cid in named if not store.has(cid)]
    if missing:
        log.info(
            "the store lacks %d files of the earlier import (%s...): importing again",
            len(missing),
            missing[0],
        )
        return None
    return cid, manifest


def record_import(store: LocalStore, key: str, manifest_cid: str) -> None:
    record = _record_path(store, key)
    record.parent.mkdir(parents=True, exist_ok=True)
    tmp = record.with_suffix(".tmp")
    tmp.write_text(json.dumps({"manifest": manifest_cid}))
    tmp.replace(record)
