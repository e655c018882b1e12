"""The shard manifest: which files make up a published model, by CID (format in docs/PROTOCOL.md).

The manifest's own CID, of its exact canonical JSON bytes, is what goes on chain. ``Manifest`` is a
frozen value; ``from_json`` checks every field so a malformed manifest fails here with a clear
message, not later inside a worker.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shardnet.errors import IntegrityError, ShardnetError
from shardnet.span import LayerSpan
from shardnet.store.cid import cid_of_bytes, cid_of_file, parse_cid, verify_cid
from shardnet.store.local import LocalStore

MANIFEST_FORMAT = "shardnet-manifest/1"
PARTS = ("embed", "layer", "head")
KINDS = ("decoder", "encoder", "vision")
"""As ``Adapter.kind``: causal LMs run step by step; encoders and vision transformers in one pass."""
WORKER_DTYPES = ("float32", "float16", "bfloat16")  # what a worker can compute in (worker --dtype)
DEFAULT_BACKWARD_FACTOR = 2
"""A fine-tuning backward position is paid as this many forward positions unless the manifest says otherwise
(the optional field ``backward_factor``, written only when it differs, so manifests without it keep their CID)."""
MAX_BACKWARD_FACTOR = 16


class ManifestError(ShardnetError, ValueError):
    """A manifest is malformed or does not describe the layers asked of it."""


@dataclass(frozen=True)
class ShardFile:
    """One weight file of a model: the embedding, the head, or layers [start, end)."""

    name: str
    part: str
    start: int
    end: int
    cid: str
    size: int

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "part": self.part,
            "start": self.start,
            "end": self.end,
            "cid": self.cid,
            "size": self.size,
        }


@dataclass(frozen=True)
class TokenizerFile:
    """A tokenizer file (tokenizer.json, tokenizer_config.json, …) kept under its own name."""

    name: str
    cid: str
    size: int

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "cid": self.cid, "size": self.size}


@dataclass(frozen=True)
class Manifest:
    """A published model: its configuration and the CIDs of its files."""

    name: str
    family: str
    architecture: str
    kind: str
    num_layers: int
    dtype: str
    config: dict[str, Any]
    files: tuple[ShardFile, ...]
    tokenizer: tuple[TokenizerFile, ...] = field(default=())
    format: str = MANIFEST_FORMAT
    #: dtypes a worker may compute this model in (empty: any of WORKER_DTYPES). A security setting, not only a
    #: quality one: verifiers accept the drift of the worker's dtype, so a loose dtype hides small cheats (int8
    #: weights inside bf16 drift); workers refuse a dtype the manifest does not list before they announce.
    worker_dtypes: tuple[str, ...] = field(default=())
    backward_factor: int = DEFAULT_BACKWARD_FACTOR  # billed positions per fine-tuning backward position

    # ------------------------------------------------------------------ queries

    def allowed_worker_dtypes(self) -> tuple[str, ...]:
        return self.worker_dtypes or WORKER_DTYPES

    def check_worker_dtype(self, dtype: str) -> None:
        """Raise ManifestError unless a worker may compute this model in ``dtype``."""
        allowed = self.allowed_worker_dtypes()
        if dtype not in allowed:
            raise ManifestError(
                f"model {self.name!r} allows workers in {', '.join(allowed)} only (its manifest's worker_dtypes), "
                f"not {dtype}: start the worker with --dtype {allowed[0]}"
            )

    def file_for_layer(self, layer: int) -> ShardFile:
        """The layer file holding ``layer``."""
        for f in self.files:
            if f.part == "layer" and f.start <= layer < f.end:
                return f
        raise ManifestError(
            f"model {self.name!r} has no file for layer {layer} (it has {self.num_layers} layers)"
        )

    def part_file(self, part: str) -> ShardFile | None:
        """The ``embed`` or ``head`` file, or None when the model has none."""
        return next((f for f in self.files if f.part == part), None)

    def files_for(self, span: LayerSpan) -> list[ShardFile]:
        """The weight files a worker serving ``span`` needs: its layers, + embed at 0, + head at the end."""
        if span.end > self.num_layers:
            raise ManifestError(
                f"layers {span} are outside model {self.name!r}, which has {self.num_layers} layers (0:{self.num_layers})"
            )
        needed = [f for f in self.files if f.part == "layer" and f.start < span.end and f.end > span.start]
        covered = {i for f in needed for i in range(f.start, f.end)}
        missing = [i for i in range(span.start, span.end) if i not in covered]
        if missing:
            raise ManifestError(f"manifest of {self.name!r} lists no file for layers {missing}")
        embed, head = self.part_file("embed"), self.part_file("head")
        if span.is_first() and embed is not None:
            needed.insert(0, embed)
        if span.is_last(self.num_layers) and head is not None:
            needed.append(head)
        return needed

    def cids_for(self, span: LayerSpan) -> list[str]:
        """CIDs of everything a worker serving ``span`` fetches: weight files and tokenizer files."""
        return [f.cid for f in self.files_for(span)] + [t.cid for t in self.tokenizer]

    # ------------------------------------------------------------------ JSON

    def to_json(self) -> dict[str, Any]:
        extra = (
            {}
            if self.backward_factor == DEFAULT_BACKWARD_FACTOR
            else {"backward_factor": self.backward_factor}
        )
        return {
            **extra,
            "format": self.format,
            "name": self.name,
            "family": self.family,
            "architecture": self.architecture,
            "kind": self.kind,
            "num_layers": self.num_layers,
            "dtype": self.dtype,
            "config": self.config,
            "files": [f.to_json() for f in self.files],
            "tokenizer": [t.to_json() for t in self.tokenizer],
            # only when set: manifests without it keep their CIDs
            **({"worker_dtypes": list(self.worker_dtypes)} if self.worker_dtypes else {}),
        }

    def to_json_bytes(self) -> bytes:
        """Canonical bytes: sorted keys, no spaces, ASCII only. The manifest CID is their CID."""
        return canonical_json(self.to_json())

    @property
    def cid(self) -> str:
        return cid_of_bytes(self.to_json_bytes())

    @classmethod
    def from_json(cls, data: bytes | str | dict[str, Any]) -> Manifest:
        """Parse and check a manifest; raises ``ManifestError`` naming the first problem found."""
        if isinstance(data, bytes | str):
            try:
                data = json.loads(data)
            except ValueError as exc:
                raise ManifestError(f"manifest is not valid JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise ManifestError("manifest must be a JSON object")
        try:
            return _parse(data)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            if isinstance(exc, ManifestError):
                raise
            raise ManifestError(f"manifest is malformed: {type(exc).__name__}: {exc}") from exc


def canonical_json(obj: Any) -> bytes:
    """The one canonical JSON encoding shardnet hashes."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode()


def _need(cond: bool, message: str) -> None:
    if not cond:
        raise ManifestError(message)


def _parse(d: dict[str, Any]) -> Manifest:
    _need(
        d.get("format") == MANIFEST_FORMAT,
        f"manifest format is {d.get('format')!r}, expected {MANIFEST_FORMAT!r}",
    )
    for key in ("name", "family", "architecture", "kind", "dtype"):
        _need(
            isinstance(d.get(key), str) and bool(d[key]), f"manifest field {key!r} must be a non-empty string"
        )
    _need(d["kind"] in KINDS, f"manifest kind {d['kind']!r} is not one of {KINDS}")
    n = d.get("num_layers")
    if type(n) is not int or n <= 0:  # type(), not isinstance: true is not a layer count
        raise ManifestError("manifest field 'num_layers' must be a positive integer")
    _need(isinstance(d.get("config"), dict), "manifest field 'config' must be an object")
    _need(
        isinstance(d.get("files"), list) and bool(d["files"]),
        "manifest field 'files' must be a non-empty list",
    )
    files = []
    for f in d["files"]:
        _need(
            f.get("part") in PARTS, f"file {f.get('name')!r} has part {f.get('part')!r}, not one of {PARTS}"
        )
        sf = ShardFile(
            str(f["name"]), f["part"], int(f["start"]), int(f["end"]), parse_cid(f["cid"]), int(f["size"])
        )
        _need(sf.size >= 0, f"file {sf.name!r} has a negative size")
        if sf.part == "layer":
            _need(
                0 <= sf.start < sf.end <= n,
                f"layer file {sf.name!r} covers [{sf.start}, {sf.end}) outside 0..{n}",
            )
        files.append(sf)
    tokenizer = []
    for t in d.get("tokenizer", []):
        name = str(t["name"])
        _need(
            "/" not in name and "\\" not in name and name not in ("", ".", ".."),
            f"bad tokenizer file name {name!r}",
        )
        tokenizer.append(TokenizerFile(name, parse_cid(t["cid"]), int(t["size"])))
    worker_dtypes = d.get("worker_dtypes", [])
    _need(
        isinstance(worker_dtypes, list) and all(w in WORKER_DTYPES for w in worker_dtypes),
        f"manifest field 'worker_dtypes' must be a list of {', '.join(WORKER_DTYPES)}",
    )
    factor = d.get("backward_factor", DEFAULT_BACKWARD_FACTOR)
    _need(
        type(factor) is int and 1 <= factor <= MAX_BACKWARD_FACTOR,
        f"manifest field 'backward_factor' must be a whole number from 1 to {MAX_BACKWARD_FACTOR} (the forward "
        f"positions a fine-tuning backward position is paid as), not {factor!r}; leave it out for "
        f"{DEFAULT_BACKWARD_FACTOR}",
    )
    return Manifest(
        name=d["name"],
        family=d["family"],
        architecture=d["architecture"],
        kind=d["kind"],
        num_layers=n,
        dtype=d["dtype"],
        config=d["config"],
        files=tuple(files),
        tokenizer=tuple(tokenizer),
        worker_dtypes=tuple(worker_dtypes),
        backward_factor=factor,
    )


def with_backward_factor(store_dir: str | Path, manifest: Manifest, factor: int) -> tuple[str, Manifest]:
    """The same model with fine-tuning backward positions paid `factor` times (a new manifest, stored in
    `store_dir`; its CID is what to register). Returns (manifest CID, manifest)."""
    changed = Manifest.from_json(
        {**manifest.to_json(), "backward_factor": factor}
    )  # checked like any manifest
    return LocalStore(store_dir).ensure().put_bytes(changed.to_json_bytes()), changed


def load_manifest(store_dir: str | Path, cid: str) -> Manifest:
    """Read the manifest ``cid`` from a store folder, verifying its bytes against the CID."""
    store = LocalStore(store_dir)
    try:
        path = store.path(cid)
    except ValueError as exc:
        raise ManifestError(f"{exc}; a manifest CID looks like bafkrei…") from exc
    if not path.is_file():
        raise ManifestError(
            f"manifest {cid} is not in the store {store.root}; fetch it first "
            f"(shardnet model fetch {cid} --layers A:B --from SOURCE --store {store.root})"
        )
    data = path.read_bytes()
    try:
        verify_cid(data, parse_cid(cid))
    except IntegrityError as exc:
        raise IntegrityError(f"manifest file {path} is corrupt: {exc}") from exc
    return Manifest.from_json(data)


def tokenizer_folder(store_dir: str | Path, manifest: Manifest) -> Path:
    """A folder holding the manifest's tokenizer files under their own names, ready for ``from_pretrained``.

    The files are copied from the store into ``<store>/.tokenizers/<manifest cid>/``; every copy, new or
    kept from an earlier call, is checked against its CID first (tokenizer files are small), so a corrupt
    or substituted tokenizer is refused with ``IntegrityError`` instead of being loaded.
    """
    store = LocalStore(store_dir)
    if not manifest.tokenizer:
        raise ManifestError(f"model {manifest.name!r} was published without tokenizer files")
    folder = store.root / ".tokenizers" / manifest.cid
    folder.mkdir(parents=True, exist_ok=True)
    for t in manifest.tokenizer:
        target = folder / t.name
        if target.is_file() and target.stat().st_size == t.size and cid_of_file(target) == t.cid:
            continue
        if not store.has(t.cid):
            raise ManifestError(
                f"tokenizer file {t.name} ({t.cid}) is not in the store {store.root}; fetch the model "
                f"(shardnet model fetch {manifest.cid} --layers A:B --from SOURCE --store {store.root})"
            )
        tmp = folder / f".{t.name}.tmp"
        store.export_to(t.cid, tmp)
        try:
            verify_cid(tmp, t.cid)
        except IntegrityError as exc:
            tmp.unlink(missing_ok=True)
            raise IntegrityError(
                f"tokenizer file {t.name}: the store's copy is corrupt ({exc}); run "
                f"`shardnet model fetch {manifest.cid} --layers A:B --from SOURCE --store {store.root}` "
                "again, which replaces corrupt copies"
            ) from None
        tmp.replace(target)
    return folder


def load_tokenizer(store_dir: str | Path, manifest: Manifest) -> Any:
    """The Hugging Face tokenizer of a published model (imports transformers)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tokenizer_folder(store_dir, manifest)))
