"""The coordinator's dashboard in a real browser (Debian's chromium + chromium-driver through selenium), against a real
network of anvil, three workers and a coordinator: the coverage map shows the three spans and their nodes, a job
appears and settles, a killed worker's span turns uncovered, HTML in a model name or endpoint shows as text, the
page works at a phone's width, and the browser's console holds no error. Full-page screenshots are saved in the
test's folder (and to $SHARDNET_DASHBOARD_SCREENSHOT, e.g. docs/dashboard.png, when set).

The JSON the page polls is checked without a browser too (so this module tests something where chromium is absent).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shardnet.chain.devnet import free_port
from shardnet.http_json import request_json
from tests.coordinator.harness import wait_for
from tests.dashboard.network import HOSTILE_ENDPOINT, HOSTILE_MODEL, SPANS, DashNet, start_dashboard_network

SHARDNET = str(Path(sys.executable).parent / "shardnet")
LAPTOP = (1280, 900)
PHONE = (390, 844)


@pytest.fixture(scope="module")
def net(tmp_path_factory: Any, anvil: Any, accounts: Any) -> Iterator[DashNet]:
    yield from start_dashboard_network(tmp_path_factory, anvil, accounts)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    try:
        from selenium import webdriver
    except ImportError:
        pytest.skip("selenium is not installed: run scripts/setup.sh (pip install -e '.[test]')")
    chromium, driver_path = shutil.which("chromium"), shutil.which("chromedriver")
    if chromium is None or driver_path is None:
        pytest.skip(
            "the browser test needs Debian's chromium and chromium-driver: scripts/test.sh installs them when run "
            "as root (apt-get install chromium chromium-driver)"
        )
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--hide-scrollbars",
    ):
        options.add_argument(arg)
    options.add_argument(f"--window-size={LAPTOP[0]},{LAPTOP[1]}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=driver_path))
    try:
        yield driver
    finally:
        driver.quit()


def snapshot(net: DashNet) -> dict[str, Any]:
    status, doc = request_json("GET", net.coordinator.url + "/dashboard/api/snapshot", timeout=10)
    assert status == 200
    return dict(doc)


def until(driver: Any, script: str, what: str, timeout: float = 60) -> Any:
    """Run `script` in the page until it returns something truthy (the page redraws itself: no stale elements)."""
    return wait_for(lambda: driver.execute_script(script), timeout, what, interval=0.3)


def spans_shown(driver: Any, model_id: int) -> list[list[str]]:
    script = (
        f"return [...document.querySelectorAll('.model[data-model-id=\"{model_id}\"] .assignment')]"
        ".map(e => [e.dataset.span, e.dataset.node, e.dataset.serving])"
    )
    return sorted(driver.execute_script(script))


def full_page_png(driver: Any, path: Path, width: int, height: int, *, mobile: bool) -> int:
    """Save a screenshot of the whole page laid out `width` CSS pixels wide; returns the page's scroll width."""
    metrics = {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile}
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)
    time.sleep(2)  # a poll redraws the chart at the new width
    full = int(driver.execute_script("return document.documentElement.scrollHeight"))
    scroll_width = int(driver.execute_script("return document.documentElement.scrollWidth"))
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", dict(metrics, height=max(full, height)))
    time.sleep(0.5)
    data = driver.execute_cdp_cmd("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True})
    path.write_bytes(base64.b64decode(data["data"]))
    driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    return scroll_width


def test_the_coordinators_snapshot_adds_health_and_its_own_jobs(net: DashNet) -> None:
    doc = snapshot(net)
    assert doc["source"] == "coordinator" and doc["coordinator"]["address"]
    model = next(m for m in doc["models"] if m["model_id"] == net.model_id)
    shown = sorted((a["span"], a["node"]) for a in model["assignments"])
    assert shown == sorted(
        ([int(x) for x in s.split(":")], net.workers[k].address) for k, (_, s) in SPANS.items()
    )
    assert model["replicas"] == [1] * 6 and model["uncovered"] == []
    assert all(a["health"] is not None and not a["health"]["down"] for a in model["assignments"])
    hostile = next(m for m in doc["models"] if m["model_id"] == net.hostile_model_id)
    assert hostile["name"] == HOSTILE_MODEL and hostile["uncovered"] == [[0, 4]]
    assert any(n["endpoint"] == HOSTILE_ENDPOINT for n in doc["nodes"])
    text = json.dumps(doc).lower()
    keys = [net.coordinator.key_hex(), *(w.key_hex() for w in net.workers.values())]
    assert not any(k.lower().removeprefix("0x") in text for k in keys)  # no key ever on the page


def test_dashboard_in_a_real_browser(browser: Any, net: DashNet) -> None:
    driver = browser
    driver.get(net.coordinator.url + "/")  # / redirects to the dashboard
    assert driver.current_url.endswith("/dashboard")
    until(driver, "return document.body.dataset.ready === 'true'", "the first snapshot drawn")

    # the coverage map: three spans, each served by its worker, every layer covered once
    expected = sorted([s, net.workers[k].address, "true"] for k, (_, s) in SPANS.items())
    until(
        driver,
        f"return document.querySelectorAll('.model[data-model-id=\"{net.model_id}\"] .assignment').length === 3",
        "3 spans",
    )
    assert spans_shown(driver, net.model_id) == expected
    layers = driver.execute_script(
        f"return [...document.querySelectorAll('.model[data-model-id=\"{net.model_id}\"] .layer')].map(e => [e.dataset.replicas, e.classList.contains('uncovered')])"
    )
    assert layers == [["1", False]] * 6

    # HTML in a model name and an endpoint is shown as text, never run
    shown_name = driver.execute_script(
        f"return document.querySelector('.model[data-model-id=\"{net.hostile_model_id}\"] .model-name').textContent"
    )
    assert shown_name == HOSTILE_MODEL
    endpoints = driver.execute_script(
        "return [...document.querySelectorAll('#nodes td')].map(e => e.textContent)"
    )
    assert HOSTILE_ENDPOINT in endpoints
    assert driver.execute_script("return document.querySelectorAll('img, script:not([src])').length") == 0
    assert driver.execute_script("return document.body.dataset.pwned === undefined")
    hostile_layers = driver.execute_script(
        f"return [...document.querySelectorAll('.model[data-model-id=\"{net.hostile_model_id}\"] .layer.uncovered')].length"
    )
    assert hostile_layers == 4  # nobody serves it: every layer red

    # a job appears, then settles
    outcome: dict[str, Any] = {}
    submit = threading.Thread(
        target=lambda: outcome.update(
            job=net.client.submit("hello dashboard", model="tiny-chat", max_tokens=8)
        )
    )
    submit.start()
    job_id = until(
        driver,
        "const r = document.querySelector('#jobs tr[data-job-id]'); return r && r.dataset.jobId",
        "a job row",
    )
    submit.join(timeout=180)
    assert outcome["job"].job_id == int(job_id)
    until(
        driver,
        f"return document.querySelector('#jobs tr[data-job-id=\"{job_id}\"]').dataset.status === 'settled'",
        "the job settled",
        timeout=120,
    )
    row = driver.execute_script(
        f"return document.querySelector('#jobs tr[data-job-id=\"{job_id}\"]').textContent"
    )
    for w in net.workers.values():
        assert w.address[:6] in row  # the route names each worker
    assert "hello dashboard" not in driver.page_source  # the prompt is not shown, nor any output: hashes only
    until(
        driver,
        "return document.querySelector('[data-total=\"jobs\"] .value').textContent === '1'",
        "the total of jobs",
    )

    shots = net.tmp / "screenshots"
    shots.mkdir(exist_ok=True)
    full_page_png(driver, shots / "laptop.png", *LAPTOP, mobile=False)
    phone_width = full_page_png(driver, shots / "phone.png", *PHONE, mobile=True)
    assert phone_width <= PHONE[0], f"the page is {phone_width} px wide at a phone's {PHONE[0]} px"
    if os.environ.get("SHARDNET_DASHBOARD_SCREENSHOT"):
        shutil.copyfile(shots / "laptop.png", os.environ["SHARDNET_DASHBOARD_SCREENSHOT"])

    # a killed worker's span turns uncovered
    net.workers["c"].kill()
    until(
        driver,
        f"return document.querySelector('.model[data-model-id=\"{net.model_id}\"]').dataset.uncovered === '4:6'",
        "4:6 uncovered",
        timeout=60,
    )
    down = [s for s in spans_shown(driver, net.model_id) if s[0] == "4:6"]
    assert down == [["4:6", net.workers["c"].address, "false"]]
    red = driver.execute_script(
        f"return [...document.querySelectorAll('.model[data-model-id=\"{net.model_id}\"] .layer')].map(e => e.classList.contains('uncovered'))"
    )
    assert red == [False, False, False, False, True, True]
    full_page_png(driver, shots / "worker-killed.png", *LAPTOP, mobile=False)

    errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    assert errors == [], f"errors in the browser's console: {errors}"


def test_standalone_dashboard_in_a_real_browser(browser: Any, net: DashNet) -> None:
    """`shardnet dashboard` from chain data alone: the same spans, no health made up, no console error."""
    port = free_port()
    log = (net.tmp / "standalone-dashboard.log").open("wb")
    deployment = str(net.tmp / "deployment.json")
    proc = subprocess.Popen(
        [SHARDNET, "dashboard", "--deployment", deployment, "--port", str(port)], stdout=log, stderr=log
    )
    try:
        driver = browser
        driver.get_log("browser")  # start from an empty console
        url = f"http://127.0.0.1:{port}/dashboard"
        wait_for(lambda: proc.poll() is None and _answers(url), 60, "the standalone dashboard listening")
        driver.get(url)
        until(driver, "return document.body.dataset.ready === 'true'", "the first snapshot drawn")
        expected = sorted([s, net.workers[k].address, "true"] for k, (_, s) in SPANS.items())
        assert spans_shown(driver, net.model_id) == expected  # the chain alone still lists a killed worker
        badges = driver.execute_script(
            "return [...document.querySelectorAll('.assignment .badge')].map(e => e.textContent)"
        )
        assert badges == ["health unknown"] * 3
        assert "chain only" in driver.find_element("id", "status").text
        errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert errors == [], f"errors in the browser's console: {errors}"
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        log.close()


def _answers(url: str) -> bool:
    try:
        return request_json("GET", url.replace("/dashboard", "/dashboard/api/snapshot"), timeout=5)[0] == 200
    except Exception:  # noqa: BLE001 - not listening yet
        return False
