"""The owner's key file: the AES key of every file of a private manifest, kept apart from the manifest.

JSON ``{"format": "shardnet-keys/1", "manifest": CID, "keys": {file name: hex key}}``, written with mode
0600 through a temporary file and a rename. It never enters a store and is never sent anywhere in the clear:
keys leave it only wrapped (ECIES) to a worker's public key (``shardnet.store.private.wrap``).
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from shardnet.errors import ConfigError

KEYS_FORMAT = "shardnet-keys/1"


@dataclass(frozen=True)
class FileKeys:
    manifest_cid: str
    keys: dict[str, bytes]

    def key(self, name: str) -> bytes:
        if name not in self.keys:
            raise ConfigError(
                f"the key file for {self.manifest_cid} has no key for {name!r}: wrong key file?"
            )
        return self.keys[name]

    def to_json_bytes(self) -> bytes:
        body = {
            "format": KEYS_FORMAT,
            "manifest": self.manifest_cid,
            "keys": {n: k.hex() for n, k in sorted(self.keys.items())},
        }
        return json.dumps(body, indent=1, sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes | str) -> FileKeys:
        try:
            d = json.loads(data)
            if d.get("format") != KEYS_FORMAT:
                raise ValueError(f"format is {d.get('format')!r}, expected {KEYS_FORMAT!r}")
            return cls(str(d["manifest"]), {str(n): bytes.fromhex(k) for n, k in d["keys"].items()})
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ConfigError(f"not a shardnet key file: {exc}") from None


def save_keys(keys: FileKeys, path: str | Path) -> Path:
    """Write ``keys`` to ``path`` (mode 0600, atomically)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-keys-", dir=path.parent)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(keys.to_json_bytes())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return path


def load_keys(path: str | Path) -> FileKeys:
    try:
        return FileKeys.from_json(Path(path).read_bytes())
    except OSError as exc:
        raise ConfigError(
            f"cannot read the key file {path}: {exc}; pass the file `shardnet store put` wrote"
        ) from None
