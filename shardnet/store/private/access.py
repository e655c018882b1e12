"""Who may read a storage node's pieces: requests signed by an authorised reader's key, fresh and bound to the node.

A node that serves its pieces to anyone lets a node holding nothing rebuild a challenged segment from k other
holders within the response window (docs/storage.md). With a reader list, a node answers a piece (its bytes, a
segment, a HEAD) only to a request carrying an EIP-191 signature over the piece's CID, the node's host as the
client addressed it, and a Unix time within ``MAX_SKEW`` seconds: storage nodes are not readers, so one cannot
fetch another's piece, and a signature a node received cannot be replayed at another node or later.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Mapping
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from eth_account import Account
from eth_account.messages import encode_defunct
from eth_utils import to_checksum_address

if TYPE_CHECKING:
    from eth_account.signers.local import LocalAccount

READER_HEADER = "X-Shardnet-Reader"
TIME_HEADER = "X-Shardnet-Read-Time"
SIGNATURE_HEADER = "X-Shardnet-Read-Signature"
KIND_HEADER = "X-Shardnet-Kind"
"""On an upload: ``manifest`` for a private manifest, which stays readable by anyone (it holds no key)."""
MAX_SKEW = 60
"""Seconds a signed read stays valid (either side of the node's clock)."""


class ReadRefused(Exception):
    """A read of a piece without a valid signature of an authorised reader; the message says what to fix."""


def read_message(cid: str, host: str, at: int) -> str:
    return f"shardnet-piece-read/1 cid={cid} host={host.lower()} time={at}"


def sign_read(account: LocalAccount, url: str, cid: str, now: float | None = None) -> dict[str, str]:
    """Headers that let ``account`` read ``cid`` at the node ``url`` for the next ``MAX_SKEW`` seconds."""
    at = int(time.time() if now is None else now)
    host = urlsplit(url).netloc
    signed = account.sign_message(encode_defunct(text=read_message(cid, host, at)))
    return {
        READER_HEADER: account.address,
        TIME_HEADER: str(at),
        SIGNATURE_HEADER: "0x" + bytes(signed.signature).hex(),
    }


def check_read(
    headers: Mapping[str, str], cid: str, host: str, readers: Collection[str], now: float | None = None
) -> str:
    """The authorised reader who signed this read of ``cid`` at ``host``; ``ReadRefused`` otherwise."""
    claimed, at_text, signature = (headers.get(h) for h in (READER_HEADER, TIME_HEADER, SIGNATURE_HEADER))
    if not (claimed and at_text and signature):
        raise ReadRefused(
            f"{cid} is a private piece: sign the read with an authorised reader's key "
            f"({READER_HEADER}, {TIME_HEADER}, {SIGNATURE_HEADER})"
        )
    try:
        at = int(at_text)
        reader = to_checksum_address(claimed)
        signer = Account.recover_message(
            encode_defunct(text=read_message(cid, host, at)),
            signature=bytes.fromhex(signature.removeprefix("0x")),
        )
    except (ValueError, TypeError) as exc:
        raise ReadRefused(f"malformed read signature: {exc}") from None
    if abs((time.time() if now is None else now) - at) > MAX_SKEW:
        raise ReadRefused(f"read signed at {at} is older or newer than {MAX_SKEW} s: sign it again now")
    if signer != reader:
        raise ReadRefused(f"the read is signed by {signer}, not {reader} (or for another piece or node)")
    if reader not in readers:
        raise ReadRefused(f"{reader} is not an authorised reader of this node's pieces")
    return reader
