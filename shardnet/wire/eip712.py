"""EIP-712 typed data of protocol v2: the registry's domain and the three structs that are signed off chain.

Every signature is bound to one deployment: the domain is ``{name: "ShardRegistry", version: "2", chainId,
verifyingContract: the registry address}``, exactly what the contract's OpenZeppelin ``EIP712`` uses, so a
signature made for one chain or one registry never verifies on another.

- ``Commitment`` (signed by a worker): its Merkle ``root`` over ``steps`` leaves for layers [start, end) of job
  ``jobId``, having computed ``positions`` token positions (what it is paid for).
- ``Ticket`` (signed by a coordinator): permission for ``worker`` to serve [start, end) of ``jobId`` in session
  ``sessionId`` until ``expiresAt``, billing at most ``maxPositions`` token positions (prompt + max tokens).
- ``Verdict`` (signed by a verifier the contract drew): "leaf ``leafIndex`` = ``leaf`` under ``accused``'s ``root``
  is wrong".

Signatures are handed to the contract in the EIP-2098 compact form ``(r, vs)``: ``vs`` is ``s`` with the top bit
set when ``v == 28``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_account.signers.local import LocalAccount
from eth_utils import to_checksum_address

DOMAIN_NAME = "ShardRegistry"
DOMAIN_VERSION = "2"

TYPES: dict[str, list[dict[str, str]]] = {
    "Commitment": [
        {"name": "jobId", "type": "uint256"},
        {"name": "start", "type": "uint32"},
        {"name": "end", "type": "uint32"},
        {"name": "positions", "type": "uint32"},
        {"name": "steps", "type": "uint32"},
        {"name": "root", "type": "bytes32"},
    ],
    "Ticket": [
        {"name": "worker", "type": "address"},
        {"name": "sessionId", "type": "string"},
        {"name": "jobId", "type": "uint256"},
        {"name": "start", "type": "uint32"},
        {"name": "end", "type": "uint32"},
        {"name": "maxPositions", "type": "uint32"},
        {"name": "expiresAt", "type": "uint64"},
    ],
    "Verdict": [
        {"name": "jobId", "type": "uint256"},
        {"name": "accused", "type": "address"},
        {"name": "root", "type": "bytes32"},
        {"name": "leafIndex", "type": "uint32"},
        {"name": "leaf", "type": "bytes32"},
    ],
}

_HALF_ORDER_BIT = 1 << 255


@dataclass(frozen=True)
class Domain:
    """The EIP-712 domain of one registry deployment."""

    chain_id: int
    registry: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": DOMAIN_NAME,
            "version": DOMAIN_VERSION,
            "chainId": int(self.chain_id),
            "verifyingContract": to_checksum_address(self.registry),
        }


@dataclass(frozen=True)
class CompactSignature:
    """An EIP-2098 signature: ``r`` and ``vs`` (32 bytes each)."""

    r: bytes
    vs: bytes

    @classmethod
    def from_rsv(cls, r: int, s: int, v: int) -> CompactSignature:
        vs = s | (_HALF_ORDER_BIT if v in (1, 28) else 0)
        return cls(r.to_bytes(32, "big"), vs.to_bytes(32, "big"))

    def to_rsv(self) -> tuple[int, int, int]:
        vs = int.from_bytes(self.vs, "big")
        return int.from_bytes(self.r, "big"), vs & (_HALF_ORDER_BIT - 1), 28 if vs & _HALF_ORDER_BIT else 27

    def hex(self) -> str:
        """``0x`` + r + vs (64 bytes)."""
        return "0x" + (self.r + self.vs).hex()

    @classmethod
    def from_hex(cls, text: str) -> CompactSignature:
        raw = bytes.fromhex(text[2:] if text.startswith("0x") else text)
        if len(raw) != 64:
            raise ValueError(f"a compact signature is 64 bytes (r, vs), got {len(raw)}")
        return cls(raw[:32], raw[32:])


def _signable(domain: Domain, primary: str, message: dict[str, Any]) -> Any:
    if primary not in TYPES:
        raise ValueError(f"unknown EIP-712 struct {primary!r}; known: {', '.join(TYPES)}")
    return encode_typed_data(
        full_message={
            "types": {
                "EIP712Domain": [
                    {"name": "name", "type": "string"},
                    {"name": "version", "type": "string"},
                    {"name": "chainId", "type": "uint256"},
                    {"name": "verifyingContract", "type": "address"},
                ],
                primary: TYPES[primary],
            },
            "primaryType": primary,
            "domain": domain.as_dict(),
            "message": message,
        }
    )


def sign_struct(
    account: LocalAccount, domain: Domain, primary: str, message: dict[str, Any]
) -> CompactSignature:
    """Sign ``message`` as the EIP-712 struct ``primary`` of ``domain``."""
    signed = account.sign_message(_signable(domain, primary, message))
    return CompactSignature.from_rsv(signed.r, signed.s, signed.v)


def recover_struct(domain: Domain, primary: str, message: dict[str, Any], signature: CompactSignature) -> str:
    """The checksum address that signed ``message``; raises ``ValueError`` for a signature that does not recover."""
    r, s, v = signature.to_rsv()
    try:
        return str(Account.recover_message(_signable(domain, primary, message), vrs=(v, r, s)))
    except Exception as exc:  # eth-account raises several types for a bad signature
        raise ValueError(f"{primary} signature does not recover: {exc}") from exc
