#!/usr/bin/env python
"""Figures of the private store (docs/storage.md): seal (AES-256-GCM + erasure coding) throughput, retrieval
from 6 local storage nodes against a plain single-source fetch, and the storage overhead n/k.

    .venv/bin/python scripts/storage_figures.py            # a 650 MB input (random bytes), n=6, k=4
    .venv/bin/python scripts/storage_figures.py --mb 100   # smaller, on a busy machine

Everything runs on this machine: the nodes are real `shardnet store serve` processes on 127.0.0.1, so the
retrieval figures measure the software (hashing, erasure decoding, decryption), not a network.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from shardnet.chain.devnet import free_port  # noqa: E402
from shardnet.store.http import download  # noqa: E402
from shardnet.store.local import LocalStore  # noqa: E402
from shardnet.store.private.get import get_private  # noqa: E402
from shardnet.store.private.put import put_private  # noqa: E402


def _start_node(store: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    shardnet = str(Path(sys.executable).parent / "shardnet")
    proc = subprocess.Popen(
        [shardnet, "store", "serve", "--store", str(store), "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            with urllib.request.urlopen(url + "/health", timeout=2):
                return proc, url
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"storage node on {url} did not start")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--mb",
        type=int,
        default=650,
        help="input size in MiB (default 650 MiB = 682 MB, about the fp32 SmolLM2 import)",
    )
    parser.add_argument("--n", type=int, default=6, help="pieces per file (default 6)")
    parser.add_argument("--k", type=int, default=4, help="pieces that rebuild it (default 4)")
    parser.add_argument(
        "--workdir", type=Path, help="scratch folder (default: a temporary one, removed after)"
    )
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="shardnet-storage-", dir=args.workdir))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        src = work / "input.bin"
        with open(src, "wb") as f:
            for _ in range(args.mb):
                f.write(os.urandom(1 << 20))
        size = src.stat().st_size
        mb = size / 1e6
        print(
            f"input: {mb:.0f} MB of random bytes; n={args.n}, k={args.k}; {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}"
        )

        t = time.perf_counter()
        manifest, keys = put_private(src, work / "owner", n=args.n, k=args.k)
        seal_s = time.perf_counter() - t
        stored = sum(p.size for f in manifest.files for p in f.pieces)
        print(
            f"seal (AES-256-GCM + erasure coding + piece hashing, written to disk): {seal_s:.1f} s, {mb / seal_s:.1f} MB/s"
        )
        print(
            f"storage overhead: n/k = {args.n / args.k:.2f}; measured {stored / size:.3f} ({stored / 1e6:.0f} MB of pieces)"
        )

        urls = []
        for j in range(args.n):
            store = LocalStore(work / f"node{j}").ensure()
            for f in manifest.files:
                os.link(work / "owner" / f.pieces[j].cid, store.root / f.pieces[j].cid)
            os.link(work / "owner" / keys.manifest_cid, store.root / keys.manifest_cid)
            proc, url = _start_node(store.root)
            procs.append(proc)
            urls.append(url)
        # the manifest in the nodes lists no holders (sealed without nodes): pass them as extra peers
        t = time.perf_counter()
        get_private(keys.manifest_cid, keys, work / "restored", work / "reader", sources=urls)
        get_s = time.perf_counter() - t
        assert (work / "restored" / "input.bin").stat().st_size == size
        print(
            f"retrieval from {args.n} local nodes (k={args.k} pieces in parallel, verify, decode, decrypt): {get_s:.1f} s, {mb / get_s:.1f} MB/s"
        )

        plain = LocalStore(work / "plain-node").ensure()
        cid = plain.put_file(src)
        proc, url = _start_node(plain.root)
        procs.append(proc)
        t = time.perf_counter()
        download(url, cid, LocalStore(work / "plain-reader"), expected_size=size, progress=False)
        plain_s = time.perf_counter() - t
        print(
            f"plain single-source fetch of the same bytes (one node, CID-verified): {plain_s:.1f} s, {mb / plain_s:.1f} MB/s"
        )
        print(f"private retrieval / plain fetch: {get_s / plain_s:.2f}x the time")
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
