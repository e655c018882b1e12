"""A local content-addressed store: a folder keeping each file as ``<store>/<cid>``.

Writes are atomic (a temporary file in the same folder, then ``os.replace``) and an existing file is
never overwritten: a running worker may hold it memory-mapped (safetensors), and its content is fixed
by its name anyway. Temporary files start with ``.tmp-`` and are never mistaken for content.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from tqdm import tqdm

from shardnet.errors import IntegrityError
from shardnet.store.cid import CHUNK_SIZE, CidHasher, cid_of_bytes, cid_of_file, parse_cid

log = logging.getLogger(__name__)

DEFAULT_STORE = Path(".shardnet/store")
"""Store folder used by the command line when ``--store`` is not given."""
PRIVATE_MARKS = ".private"
"""Sub-folder of the store with an empty file per CID that is a private model's plaintext (never served)."""


class LocalStore:
    """Files addressed by CID in one folder."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def ensure(self) -> LocalStore:
        """Create the folder if needed and return self."""
        self.root.mkdir(parents=True, exist_ok=True)
        return self

    def path(self, cid: str) -> Path:
        """Where the file of ``cid`` is (or would be); raises ``ValueError`` for a malformed CID."""
        return self.root / parse_cid(cid)

    def has(self, cid: str) -> bool:
        """True when the store holds a file for ``cid`` (its content is checked when it was put)."""
        try:
            return self.path(cid).is_file()
        except ValueError:
            return False

    def __contains__(self, cid: object) -> bool:
        return isinstance(cid, str) and self.has(cid)

    def cids(self) -> list[str]:
        """Every CID in the store, sorted."""
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_file() and not p.name.startswith("."))

    def put_bytes(self, data: bytes, expected_cid: str | None = None) -> str:
        """Store ``data`` and return its CID; with ``expected_cid``, refuse data that does not match it."""
        cid = cid_of_bytes(data)
        _check_expected(cid, expected_cid, len(data), None, "data")
        if not self.has(cid):
            with self.incoming() as (f, tmp):
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
                self._commit(tmp, cid)
        return cid

    def put_file(self, path: str | Path, expected_cid: str | None = None, move: bool = False) -> str:
        """Put the file at ``path`` into the store and return its CID.

        By default the file is copied (and hashed while copying). With ``move`` it is hashed, then
        renamed into place, which is free on the same file system (the importer writes its parts in a
        temporary folder inside the store for this); the source is gone afterwards either way.
        """
        if not move:
            with open(path, "rb") as src:
                return self.put_stream(src, expected_cid=expected_cid, label=str(path))
        path = Path(path)
        cid = cid_of_file(path)
        _check_expected(cid, expected_cid, path.stat().st_size, None, str(path))
        self.ensure()
        if self.has(cid):
            path.unlink()
            return cid
        try:
            os.chmod(path, 0o444)
            os.link(path, self.root / cid)
        except FileExistsError:
            pass
        except OSError:  # another file system, or no hard links: copy instead
            with open(path, "rb") as src:
                self.put_stream(src, expected_cid=cid, label=str(path))
        path.unlink()
        return cid

    def put_stream(
        self,
        src: BinaryIO,
        expected_cid: str | None = None,
        expected_size: int | None = None,
        label: str = "stream",
        replace: bool = False,
        progress: bool = False,
    ) -> str:
        """Copy a binary stream into the store, verifying its CID before the file becomes visible.

        With ``progress``, a byte progress bar named ``label`` runs on stderr while it copies.
        """
        with self.incoming() as (f, tmp):
            hasher = CidHasher()
            bar = tqdm(
                total=expected_size, unit="B", unit_scale=True, desc=label, disable=not progress, leave=False
            )
            try:
                while chunk := src.read(CHUNK_SIZE):
                    hasher.update(chunk)
                    f.write(chunk)
                    bar.update(len(chunk))
            finally:
                bar.close()
            f.flush()
            os.fsync(f.fileno())
            cid = hasher.cid()
            _check_expected(cid, expected_cid, hasher.size, expected_size, label)
            self.commit(tmp, cid, replace=replace)
        return cid

    def commit(self, tmp: Path, cid: str, replace: bool = False) -> None:
        """Move a verified temporary file into place as ``<store>/<cid>``.

        An existing file is kept, unless ``replace`` (used when the existing copy failed verification):
        then it is swapped by rename, so a process that mapped the old file keeps its own copy.
        """
        cid = parse_cid(cid)
        if replace:
            os.chmod(tmp, 0o444)
            os.replace(tmp, self.root / cid)
            log.warning("replaced the corrupt stored copy of %s", cid)
            return
        self._commit(tmp, cid)

    @contextmanager
    def incoming(self) -> Iterator[tuple[BinaryIO, Path]]:
        """A temporary file in the store for incoming content; removed on exit unless committed."""
        self.ensure()
        fd, name = tempfile.mkstemp(prefix=".tmp-", dir=self.root)
        tmp = Path(name)
        try:
            with os.fdopen(fd, "wb") as f:
                yield f, tmp
        finally:
            tmp.unlink(missing_ok=True)

    def _commit(self, tmp: Path, cid: str) -> None:
        final = self.root / cid
        if final.exists():
            log.debug("store already holds %s; keeping the existing file", cid)
            return
        os.chmod(tmp, 0o444)
        try:
            # link() fails if the target exists, so a file another process put meanwhile is never replaced.
            os.link(tmp, final)
        except FileExistsError:
            return
        except OSError:
            os.replace(tmp, final)  # file systems without hard links
        log.debug("stored %s", cid)

    def mark_private(self, cid: str) -> None:
        """Mark ``cid`` as the plaintext of a private file: the shard routes never serve it (``is_private``)."""
        folder = self.root / PRIVATE_MARKS
        folder.mkdir(parents=True, exist_ok=True)
        (folder / parse_cid(cid)).touch()

    def is_private(self, cid: str) -> bool:
        """True when ``cid`` was marked as a private plaintext (``mark_private``)."""
        return (self.root / PRIVATE_MARKS / cid).exists()

    def export_to(self, cid: str, dest: str | Path) -> Path:
        """Copy a stored file out to ``dest`` (e.g. to give a tokenizer file its name)."""
        dest = Path(dest)
        shutil.copyfile(self.path(cid), dest)
        return dest


def _check_expected(
    cid: str, expected_cid: str | None, size: int, expected_size: int | None, label: str
) -> None:
    if expected_size is not None and size != expected_size:
        raise IntegrityError(
            f"{label}: got {size} bytes, expected {expected_size} (truncated or wrong file); "
            "nothing was stored, fetch it again from another source"
        )
    if expected_cid is not None and cid != parse_cid(expected_cid):
        raise IntegrityError(
            f"{label}: content hashes to {cid}, expected {expected_cid} (corrupt or substituted); "
            "nothing was stored, fetch it again from another source"
        )
