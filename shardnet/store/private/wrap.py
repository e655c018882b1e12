"""File keys wrapped to one worker: ECIES on secp256k1 to the public key behind its registered address.

A worker asks for keys with an EIP-191 signed request naming the private manifest, the model and an expiry;
the owner recovers the signer's public key from the signature (so it needs no key directory: the chain
knows the address, the signature gives the key) and encrypts each file key to it with ECIES (eciespy).
Only the holder of that address's private key can unwrap them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import ecies
from eth_keys.datatypes import PrivateKey, Signature
from eth_utils import keccak, to_checksum_address

from shardnet.errors import ShardnetError
from shardnet.store.private.keyfile import FileKeys

REQUEST_TTL = 300
"""Seconds a signed key request stays valid."""


class KeyAccessError(ShardnetError):
    """A key request was refused, or wrapped keys could not be opened with this key."""


@dataclass(frozen=True)
class KeyRequest:
    manifest_cid: str
    model_id: int
    address: str
    expires: int
    signature: bytes

    def message(self) -> bytes:
        return request_message(self.manifest_cid, self.model_id, self.address, self.expires)

    def to_json(self) -> dict[str, Any]:
        return {
            "manifest": self.manifest_cid,
            "model_id": self.model_id,
            "address": self.address,
            "expires": self.expires,
            "signature": self.signature.hex(),
        }

    @classmethod
    def from_json(cls, d: Any) -> KeyRequest:
        try:
            return cls(
                str(d["manifest"]),
                int(d["model_id"]),
                to_checksum_address(str(d["address"])),
                int(d["expires"]),
                bytes.fromhex(str(d["signature"]).removeprefix("0x")),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise KeyAccessError(f"malformed key request: {exc}") from None


def request_message(manifest_cid: str, model_id: int, address: str, expires: int) -> bytes:
    return (
        f"shardnet key request\nmanifest: {manifest_cid}\nmodel: {model_id}\n"
        f"worker: {to_checksum_address(address)}\nexpires: {expires}"
    ).encode()


def _eip191_hash(message: bytes) -> bytes:
    return keccak(b"\x19Ethereum Signed Message:\n" + str(len(message)).encode() + message)


def sign_request(private_key: bytes, manifest_cid: str, model_id: int, ttl: int = REQUEST_TTL) -> KeyRequest:
    """A worker's signed request for the keys of ``manifest_cid`` (as served for model ``model_id``)."""
    key = PrivateKey(private_key)
    address = key.public_key.to_checksum_address()
    expires = int(time.time()) + ttl
    signature = key.sign_msg_hash(_eip191_hash(request_message(manifest_cid, model_id, address, expires)))
    return KeyRequest(manifest_cid, model_id, address, expires, signature.to_bytes())


def public_key_of(request: KeyRequest) -> bytes:
    """The signer's 65-byte uncompressed public key; raises ``KeyAccessError`` unless it is the named address's."""
    sig = bytearray(request.signature)
    if len(sig) != 65:
        raise KeyAccessError(f"signature has {len(sig)} bytes, expected 65")
    if sig[64] >= 27:
        sig[64] -= 27
    try:
        public = Signature(bytes(sig)).recover_public_key_from_msg_hash(_eip191_hash(request.message()))
    except Exception as exc:  # eth_keys raises several types for a bad signature
        raise KeyAccessError(f"signature does not recover: {exc}") from None
    if public.to_checksum_address() != request.address:
        raise KeyAccessError(
            f"the request is signed by {public.to_checksum_address()}, not {request.address}"
        )
    return b"\x04" + public.to_bytes()


def wrap_keys(keys: FileKeys, public_key: bytes, recipient: str) -> dict[str, Any]:
    """Every file key of ``keys`` encrypted to ``public_key`` (ECIES secp256k1), as a JSON envelope."""
    return {
        "manifest": keys.manifest_cid,
        "recipient": recipient,
        "keys": {name: ecies.encrypt(public_key, key).hex() for name, key in sorted(keys.keys.items())},
    }


def unwrap_keys(envelope: dict[str, Any], private_key: bytes) -> FileKeys:
    """Open an envelope with the recipient's private key; ``KeyAccessError`` if it was wrapped to someone else."""
    try:
        keys = {
            str(name): ecies.decrypt(private_key, bytes.fromhex(str(ct)))
            for name, ct in envelope["keys"].items()
        }
    except (ValueError, KeyError, TypeError) as exc:
        raise KeyAccessError(
            f"cannot unwrap the keys of {envelope.get('manifest')}: they were not wrapped to this key ({exc})"
        ) from None
    return FileKeys(str(envelope["manifest"]), keys)
