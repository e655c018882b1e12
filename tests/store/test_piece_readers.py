"""Storage challenges prove a node holds its OWN piece (issue 15 item 4, review of r15): real `shardnet store
serve` processes started with `--reader OWNER` serve a piece's bytes and segments only to reads the owner signed,
fresh and addressed to that node. A node that lost its piece cannot rebuild the challenged segment from the
other holders (storage nodes are not readers), while the owner still gets the file back bit-exact."""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from eth_account import Account

from shardnet.store.http import shard_url
from shardnet.store.local import LocalStore
from shardnet.store.private.access import sign_read
from shardnet.store.private.audit import spot_check
from shardnet.store.private.get import MissingPiecesError, gather_pieces, get_private
from shardnet.store.private.keyfile import save_keys
from shardnet.store.private.node import SEGMENT_PATH
from shardnet.store.private.put import put_private
from tests.store.storage_nodes import StorageNode, run_cli, start_nodes

OWNER = Account.create()
CHEATER = Account.create()  # the key of node 0: a registered storage node, not a reader


@pytest.fixture
def nodes(tmp_path: Path) -> Iterator[list[StorageNode]]:
    started = start_nodes(tmp_path / "nodes", 6, "--reader", OWNER.address)
    yield started
    for node in started:
        node.kill()


def _status(url: str, headers: dict[str, str] | None = None) -> int:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=10) as r:
            r.read()
            return int(r.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def test_only_the_owner_reads_pieces_so_a_node_cannot_rebuild_its_lost_one(
    tmp_path: Path, nodes, monkeypatch
) -> None:
    src = tmp_path / "data.bin"
    src.write_bytes(os.urandom(200_000))
    manifest, keys = put_private(src, tmp_path / "owner", n=6, k=4, nodes=[n.url for n in nodes])
    f = manifest.files[0]
    urls = [n.url for n in nodes]
    manifest_cid = keys.manifest_cid

    # the manifest stays public (it holds no key); every piece is refused to an unsigned read
    assert _status(shard_url(urls[1], manifest_cid)) == 200
    for j in range(6):
        assert _status(shard_url(urls[j], f.pieces[j].cid)) == 403
        assert _status(urls[j] + SEGMENT_PATH.format(cid=f.pieces[j].cid, index=0)) == 403

    # node 0 lost its piece; its challenge asks for leaf `leaf`: the same range of 4 other pieces would rebuild it
    (nodes[0].store / f.pieces[0].cid).unlink()
    leaf = f.pieces[0].leaves // 2
    for j in range(1, 5):
        seg = urls[j] + SEGMENT_PATH.format(cid=f.pieces[j].cid, index=leaf)
        assert _status(seg, sign_read(CHEATER, urls[j], f.pieces[j].cid)) == 403  # not a reader
        assert _status(seg, sign_read(OWNER, urls[j], f.pieces[j].cid)) == 200  # the owner is
        # a read the owner signed cannot be replayed: for another node, another piece, or once stale
        assert _status(seg, sign_read(OWNER, urls[(j % 4) + 1], f.pieces[j].cid)) == 403
        assert _status(seg, sign_read(OWNER, urls[j], f.pieces[0].cid)) == 403
        assert _status(seg, sign_read(OWNER, urls[j], f.pieces[j].cid, now=time.time() - 120)) == 403
    with pytest.raises(MissingPiecesError, match="403"):
        gather_pieces(f, LocalStore(tmp_path / "cheater").ensure(), reader=CHEATER)

    # spot checks: the owner's pass where the piece is held, fail where it was lost; the cheater's are refused
    assert spot_check(urls[3], f.pieces[3], reader=OWNER).passed
    assert not spot_check(urls[0], f.pieces[0], reader=OWNER).passed
    refused = spot_check(urls[3], f.pieces[3], reader=CHEATER)
    assert not refused.passed and "refused" in refused.detail

    # the owner still gets the file back, bit-exact, from the 5 nodes left
    _, written = get_private(
        manifest_cid, keys, tmp_path / "out", tmp_path / "owner-get", sources=urls, reader=OWNER
    )
    assert written[0].read_bytes() == src.read_bytes()
    # the same from the command line, reads signed with the key in an environment variable
    keyfile = save_keys(keys, tmp_path / "owner.keys.json")
    get = ["store", "get", manifest_cid, "--keys", str(keyfile)]
    for url in urls:
        get += ["--from", url]
    monkeypatch.setenv("S15B_READER_KEY", OWNER.key.hex())
    signed = ["--sign-reads-env", "S15B_READER_KEY", "--store", str(tmp_path / "cli-store")]
    done = run_cli(*get, *signed, "--out", str(tmp_path / "cli-out"))
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "cli-out" / src.name).read_bytes() == src.read_bytes()
    fresh_store = ["--store", str(tmp_path / "cli-unsigned-store")]  # no pieces held from the signed run
    unsigned = run_cli(*get, *fresh_store, "--out", str(tmp_path / "cli-unsigned"))
    assert unsigned.returncode != 0 and "403" in unsigned.stderr
    body = json.loads(
        urllib.request.urlopen(
            urllib.request.Request(
                urls[2] + SEGMENT_PATH.format(cid=f.pieces[2].cid, index=0),
                headers=sign_read(OWNER, urls[2], f.pieces[2].cid),
            ),
            timeout=10,
        ).read()
    )
    assert body["index"] == 0
