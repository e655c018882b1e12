"""Private models: an imported model's files sealed into one private manifest, and a worker's restore of its span.

``seal_model`` seals the model manifest (as ``manifest.json``) and every weight and tokenizer file (each named
by its plaintext CID) of an imported model. The private manifest's CID is what the owner registers on chain.
``restore_model`` is the worker's side: with keys from the keyholder it rebuilds the model manifest and only
the files its layer span needs into its store, where they sit under their plaintext CIDs exactly as a public
import puts them; everything downstream (``fetch_files`` from the store, ``load_block``) is unchanged.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from shardnet.errors import IntegrityError
from shardnet.span import LayerSpan
from shardnet.store.cid import cid_of_file
from shardnet.store.http import DEFAULT_TIMEOUT
from shardnet.store.local import LocalStore
from shardnet.store.manifest import Manifest, ManifestError, load_manifest
from shardnet.store.private.get import gather_pieces, load_private_manifest, restore_file
from shardnet.store.private.keyfile import FileKeys
from shardnet.store.private.manifest import PrivateManifest
from shardnet.store.private.put import put_files

MODEL_MANIFEST_NAME = "manifest.json"


def seal_model(
    store_dir: Path,
    manifest_cid: str,
    *,
    n: int = 6,
    k: int = 4,
    nodes: Sequence[str] = (),
    piece_dir: Path | None = None,
    on_bytes: Callable[[int], None] | None = None,
) -> tuple[PrivateManifest, FileKeys]:
    """Seal the imported model ``manifest_cid`` (in ``store_dir``) into a private manifest; returns it and the keys.

    Pieces and the private manifest go to ``piece_dir`` (default: ``store_dir`` itself)."""
    store = LocalStore(store_dir)
    model = load_manifest(store_dir, manifest_cid)
    cids = list(dict.fromkeys([f.cid for f in model.files] + [t.cid for t in model.tokenizer]))
    for cid in [manifest_cid, *cids]:  # the store serves its files by CID: never these plaintexts
        store.mark_private(cid)
    files = [(MODEL_MANIFEST_NAME, store.path(manifest_cid))] + [(cid, store.path(cid)) for cid in cids]
    return put_files(
        files, piece_dir or store_dir, n=n, k=k, nodes=nodes, name=f"model {model.name}", on_bytes=on_bytes
    )


def _restore_into_store(
    private: PrivateManifest,
    name: str,
    keys: FileKeys,
    store: LocalStore,
    peers: Sequence[str],
    timeout: float,
) -> Path:
    entry = private.file(name)
    pieces = gather_pieces(entry, store, peers, timeout)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-plain-", dir=store.root)
    os.close(fd)
    try:
        return restore_file(entry, pieces, keys.key(name), Path(tmp))
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _commit(store: LocalStore, tmp: Path, expected_cid: str | None) -> str:
    """Move a restored plaintext into the store under its CID (checked against ``expected_cid``), marked private
    before it is visible so the store's shard route never serves it; never leave the temporary file behind."""
    try:
        store.mark_private(expected_cid or cid_of_file(tmp))
        return store.put_file(tmp, expected_cid=expected_cid, move=True)
    finally:
        tmp.unlink(missing_ok=True)


def restore_model(
    private_cid: str,
    keys: FileKeys,
    span: LayerSpan,
    store_dir: Path,
    *,
    sources: Sequence[str] = (),
    timeout: float = DEFAULT_TIMEOUT,
) -> tuple[str, Manifest]:
    """Rebuild the model manifest and the files ``span`` needs into ``store_dir``; returns (model manifest CID, manifest)."""
    store = LocalStore(store_dir).ensure()
    private = load_private_manifest(private_cid, sources, store.root, timeout)
    peers = [s for s in sources if s.startswith(("http://", "https://"))]
    tmp = _restore_into_store(private, MODEL_MANIFEST_NAME, keys, store, peers, timeout)
    model_cid = _commit(store, tmp, None)
    model = load_manifest(store.root, model_cid)
    for cid in model.cids_for(span):
        path = store.root / cid
        if path.is_file() and cid_of_file(path) == cid:
            store.mark_private(cid)  # restored by an earlier start
            continue
        try:
            private.file(cid)
        except ManifestError:
            raise IntegrityError(
                f"private manifest {private_cid} lacks the model file {cid}: it was sealed incompletely"
            ) from None
        tmp = _restore_into_store(private, cid, keys, store, peers, timeout)
        _commit(store, tmp, cid)
    return model_cid, model


def model_of_private(store_dir: Path, private_cid: str, model_cid: str) -> Manifest:
    """The model manifest ``model_cid`` (in the owner's store), checked to be the one sealed in ``private_cid``.

    ``model register`` reads the name and layer count from it: the private manifest itself does not say them.
    """
    import hashlib

    private = load_private_manifest(private_cid, [], store_dir)
    model = load_manifest(store_dir, model_cid)
    sealed = private.file(MODEL_MANIFEST_NAME)
    if hashlib.sha256(model.to_json_bytes()).hexdigest() != sealed.sha256:
        raise ManifestError(
            f"model manifest {model_cid} is not the one sealed in {private_cid}: pass the model manifest CID "
            "that `shardnet model import --private` printed with it"
        )
    names = {f.name for f in private.files}
    missing = [c for c in [f.cid for f in model.files] + [t.cid for t in model.tokenizer] if c not in names]
    if missing:
        raise ManifestError(
            f"private manifest {private_cid} lacks {len(missing)} files of the model, e.g. {missing[0]}"
        )
    return model
