"""`shardnet dashboard` as a real process against a real registry on anvil: the page, its assets and snapshot
from chain data alone, read-only (GET only), with its security headers, and its flags' errors."""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from eth_account.signers.local import LocalAccount

from shardnet.chain.devnet import free_port
from shardnet.chain.registry import Registry
from shardnet.http_json import request_json
from tests.chain.registry_world import World, build_world
from tests.fixtures_chain import DevChain

SHARDNET = str(Path(sys.executable).parent / "shardnet")


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


def fetch(url: str, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    opener = urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(urllib.request.Request(url, method=method), timeout=10) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


@pytest.fixture
def world(anvil: DevChain, accounts: list[LocalAccount], registry_for: Callable[..., Registry]) -> World:
    return build_world(anvil, accounts, registry_for)


@pytest.fixture
def dashboard(world: World, anvil: DevChain, tmp_path: Path) -> Iterator[str]:
    port = free_port()
    log = (tmp_path / "dashboard.log").open("wb")
    args = ["dashboard", "--rpc-url", anvil.rpc_url, "--registry", world.gov.address, "--port", str(port)]
    proc = subprocess.Popen(
        [SHARDNET, *args, "--from-block", str(world.gov.deploy_block)], stdout=log, stderr=log
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if fetch(url + "/dashboard")[0] == 200:
                    break
            except OSError:
                pass
            assert proc.poll() is None, (tmp_path / "dashboard.log").read_text()
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        log.close()


def test_standalone_dashboard_serves_chain_data_read_only(world: World, dashboard: str) -> None:
    status, headers, body = fetch(dashboard + "/dashboard")
    assert status == 200 and b'<script src="/dashboard/assets/app.js" defer></script>' in body
    csp = headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
    assert headers["X-Content-Type-Options"] == "nosniff" and headers["X-Frame-Options"] == "DENY"
    assert b"<script>" not in body.replace(b'<script src="/dashboard/assets/app.js" defer></script>', b"")

    status, headers, body = fetch(dashboard + "/dashboard/assets/app.js")
    assert (
        status == 200
        and headers["Content-Type"].startswith("text/javascript")
        and not any(
            sink in body for sink in (b"innerHTML", b"outerHTML", b"insertAdjacentHTML", b"document.write")
        )
    )
    assert fetch(dashboard + "/dashboard/assets/style.css")[0] == 200
    assert fetch(dashboard + "/dashboard/assets/..%2f__init__.py")[0] == 404
    assert fetch(dashboard + "/dashboard/assets/index.py")[0] == 404
    status, headers, _ = fetch(dashboard + "/")
    assert status == 302 and headers["Location"] == "/dashboard"
    for method in ("POST", "PUT", "DELETE"):
        assert fetch(dashboard + "/dashboard/api/snapshot", method)[0] == 405

    job_id = world.submit()
    world.settle(job_id)
    time.sleep(1.1)  # the snapshot is rebuilt at most once a second
    status, doc = request_json("GET", dashboard + "/dashboard/api/snapshot", timeout=10)
    assert status == 200 and doc["source"] == "chain" and doc["coordinator"] is None
    assert doc["chain"]["registry"] == world.gov.address
    model = next(m for m in doc["models"] if m["model_id"] == world.model_id)
    assert model["replicas"] == [2, 2, 2, 2]
    assert all(a["health"] is None for a in model["assignments"])  # no coordinator: no health made up
    assert [(j["job_id"], j["status"]) for j in doc["jobs"]] == [(job_id, "settled")]


def test_standalone_flags_explain_what_is_missing(tmp_path: Path) -> None:
    out = subprocess.run(
        [SHARDNET, "dashboard", "--registry", "0x" + "11" * 20], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 1 and "--registry needs --rpc-url" in out.stderr
    out = subprocess.run(
        [SHARDNET, "dashboard", "--deployment", str(tmp_path / "none.json")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 1 and "no deployment file" in out.stderr
