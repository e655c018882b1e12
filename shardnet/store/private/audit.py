"""Checking that storage nodes still hold their pieces: off-chain spot checks and on-chain challenge answers.

A spot check asks a node for a random Merkle leaf of a piece (``GET /v1/pieces/{cid}/segment/{i}``) and checks
the segment and its proof against the root the manifest recorded: a node that lost or altered the piece fails.
The same proof answers a StorageRewards challenge on chain (``answer_challenge``), which is what pays the node.
"""

from __future__ import annotations

import json
import secrets
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from shardnet.store.private.access import sign_read
from shardnet.store.private.manifest import PieceEntry
from shardnet.store.private.merkle import leaf_hashes, merkle_proof, read_segment, verify_proof
from shardnet.store.private.node import SEGMENT_PATH

if TYPE_CHECKING:
    from eth_account.signers.local import LocalAccount

    from shardnet.chain.storage_rewards import StorageRewards
    from shardnet.chain.tx import TxResult


@dataclass(frozen=True)
class SpotCheck:
    node: str
    cid: str
    leaf: int
    passed: bool
    detail: str


def spot_check(
    node: str,
    piece: PieceEntry,
    leaf: int | None = None,
    timeout: float = 10.0,
    reader: LocalAccount | None = None,
) -> SpotCheck:
    """Ask ``node`` for a (random, unless given) leaf of ``piece`` and check it against the manifest's root.

    With ``reader`` the request is signed by that key (nodes that serve pieces only to readers)."""
    leaf = secrets.randbelow(piece.leaves) if leaf is None else leaf
    url = node.rstrip("/") + SEGMENT_PATH.format(cid=piece.cid, index=leaf)
    headers = {} if reader is None else sign_read(reader, node, piece.cid)
    try:
        with urllib.request.urlopen(
            urllib.request.Request(url, headers=headers), timeout=timeout
        ) as response:  # noqa: S310 (http(s) holders only)
            body = json.loads(response.read(1 << 20))
        segment = bytes.fromhex(body["segment"])
        proof = [bytes.fromhex(p) for p in body["proof"]]
    except urllib.error.HTTPError as exc:
        why = "the read was refused" if exc.code == 403 else "the node does not hold the piece"
        return SpotCheck(node, piece.cid, leaf, False, f"answered {exc.code}: {why}")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return SpotCheck(node, piece.cid, leaf, False, f"no valid answer: {exc}")
    ok = verify_proof(segment, leaf, piece.leaves, proof, bytes.fromhex(piece.merkle_root))
    return SpotCheck(
        node,
        piece.cid,
        leaf,
        ok,
        "proof matches the manifest's root" if ok else "proof does not match the root",
    )


def answer_challenge(rewards: StorageRewards, deal_id: int, piece_path: Path) -> TxResult:
    """As the deal's node: answer the open challenge from the piece file held locally."""
    leaf = rewards.challenge_leaf(deal_id)
    leaves = leaf_hashes(piece_path)
    return rewards.respond(deal_id, read_segment(piece_path, leaf), merkle_proof(leaves, leaf))
