"""Signed commitments and verdicts of protocol v2, as the registry checks them.

A worker signs one ``Commitment`` per hop it served (``sign_commitment``) and hands it to the coordinator with its
last answer; the coordinator checks it (``verify_commitment``) and settles it with ``Registry.settle_jobs``. A
worker whose commitment was left out posts it itself with ``Registry.post_commitment``. A verifier drawn by the
contract signs a ``Verdict`` against a wrong leaf (``sign_verdict``); ``Registry.slash`` carries those.

    domain = Domain(chain_id, registry_address)
    signed = sign_commitment(worker_key, domain, job_id=7, span=LayerSpan(0, 10), positions=104, steps=64,
                             root=merkle_root(step_hashes))
    assert verify_commitment(signed, domain, job_id=7)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from eth_account.signers.local import LocalAccount
from eth_utils import to_checksum_address

from shardnet.span import LayerSpan
from shardnet.wire.eip712 import CompactSignature, Domain, recover_struct, sign_struct

__all__ = [
    "CompactSignature",
    "Domain",
    "SignedCommitment",
    "commitment_message",
    "sign_commitment",
    "INNOCENT_LEAF",
    "INNOCENT_LEAF_INDEX",
    "sign_innocent_verdict",
    "sign_verdict",
    "verdict_message",
    "verify_commitment",
    "verify_verdict",
]


@dataclass(frozen=True)
class SignedCommitment:
    """IShardRegistry.SignedCommitment: a worker's signed commitment for one hop of job ``job_id``."""

    job_id: int
    node: str
    start: int
    end: int
    positions: int
    steps: int
    root: bytes
    signature: CompactSignature

    @property
    def span(self) -> LayerSpan:
        return LayerSpan(self.start, self.end)

    @property
    def layer_tokens(self) -> int:
        """What the hop is paid for: positions x layers."""
        return self.positions * (self.end - self.start)

    def as_tuple(self) -> tuple[Any, ...]:
        """The ABI tuple (node, start, end, positions, steps, root, r, vs)."""
        return (
            to_checksum_address(self.node),
            self.start,
            self.end,
            self.positions,
            self.steps,
            self.root,
            self.signature.r,
            self.signature.vs,
        )

    def sort_key(self) -> tuple[int, int]:
        """The order the registry wants hops in: by start layer, then node address."""
        return self.start, int(self.node, 16)

    def to_json(self) -> dict[str, Any]:
        return {
            "job_id": self.job_id,
            "node": to_checksum_address(self.node),
            "start": self.start,
            "end": self.end,
            "positions": self.positions,
            "steps": self.steps,
            "root": "0x" + self.root.hex(),
            "signature": self.signature.hex(),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SignedCommitment:
        root = bytes.fromhex(str(data["root"]).removeprefix("0x"))
        if len(root) != 32:
            raise ValueError(f"commitment root must be 32 bytes, got {len(root)}")
        return cls(
            int(data["job_id"]),
            to_checksum_address(data["node"]),
            int(data["start"]),
            int(data["end"]),
            int(data["positions"]),
            int(data["steps"]),
            root,
            CompactSignature.from_hex(str(data["signature"])),
        )


def commitment_message(
    job_id: int, span: LayerSpan, positions: int, steps: int, root: bytes
) -> dict[str, Any]:
    if len(root) != 32:
        raise ValueError(f"a commitment root is 32 bytes, got {len(root)}")
    return {
        "jobId": job_id,
        "start": span.start,
        "end": span.end,
        "positions": positions,
        "steps": steps,
        "root": root,
    }


def sign_commitment(
    account: LocalAccount,
    domain: Domain,
    *,
    job_id: int,
    span: LayerSpan,
    positions: int,
    steps: int,
    root: bytes,
) -> SignedCommitment:
    """The worker's signed commitment to ``root`` (``steps`` leaves) for ``span`` of job ``job_id``."""
    if positions < 0 or steps < 0:
        raise ValueError(
            "positions and steps count token positions and Merkle leaves: they cannot be negative"
        )
    signature = sign_struct(
        account, domain, "Commitment", commitment_message(job_id, span, positions, steps, root)
    )
    return SignedCommitment(
        job_id, account.address, span.start, span.end, positions, steps, bytes(root), signature
    )


def verify_commitment(signed: SignedCommitment, domain: Domain, *, job_id: int | None = None) -> bool:
    """True when ``signed.node`` signed this commitment in ``domain`` (and, if given, for ``job_id``)."""
    if job_id is not None and signed.job_id != job_id:
        return False
    message = commitment_message(signed.job_id, signed.span, signed.positions, signed.steps, signed.root)
    try:
        signer = recover_struct(domain, "Commitment", message, signed.signature)
    except ValueError:
        return False
    return signer == to_checksum_address(signed.node)


def verdict_message(job_id: int, accused: str, root: bytes, leaf_index: int, leaf: bytes) -> dict[str, Any]:
    return {
        "jobId": job_id,
        "accused": to_checksum_address(accused),
        "root": root,
        "leafIndex": leaf_index,
        "leaf": leaf,
    }


def sign_verdict(
    account: LocalAccount,
    domain: Domain,
    *,
    job_id: int,
    accused: str,
    root: bytes,
    leaf_index: int,
    leaf: bytes,
) -> CompactSignature:
    """A drawn verifier's signature that leaf ``leaf_index`` (= ``leaf``) under ``accused``'s ``root`` is wrong."""
    return sign_struct(account, domain, "Verdict", verdict_message(job_id, accused, root, leaf_index, leaf))


def verify_verdict(
    signature: CompactSignature,
    domain: Domain,
    *,
    job_id: int,
    accused: str,
    root: bytes,
    leaf_index: int,
    leaf: bytes,
) -> str:
    """The address that signed the verdict (raises ``ValueError`` if it does not recover)."""
    return recover_struct(
        domain, "Verdict", verdict_message(job_id, accused, root, leaf_index, leaf), signature
    )


#: An innocent verdict is a ``Verdict`` on this leaf index (ShardRegistry.INNOCENT_LEAF_INDEX, 2**32 - 1) with an
#: all-zero leaf: "I recomputed the hop and every leaf is right". No hop has that many leaves, so it can never
#: back a slash; the registry pays it like a guilty one (``payVerifiers``).
INNOCENT_LEAF_INDEX = 2**32 - 1
INNOCENT_LEAF = bytes(32)


def sign_innocent_verdict(
    account: LocalAccount, domain: Domain, *, job_id: int, accused: str, root: bytes
) -> CompactSignature:
    """A drawn verifier's signature that ``accused``'s hop under ``root`` is right (what it is paid for)."""
    return sign_verdict(
        account,
        domain,
        job_id=job_id,
        accused=accused,
        root=root,
        leaf_index=INNOCENT_LEAF_INDEX,
        leaf=INNOCENT_LEAF,
    )
