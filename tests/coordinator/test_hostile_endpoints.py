"""Issue 11 (hostile input) on the coordinator's endpoints added after the first fuzz run: preflight, fine-tuning
jobs (/v1/train/jobs/...) and the dashboard's API. JSON bombs, garbage, ids out of range, huge bodies and a
concurrent flood of them against the real `coordinator run` of the shared network: every answer is 4xx, never
5xx, the process keeps running and a paid job is served with the right text afterwards."""

from __future__ import annotations

import random
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

from tests.coordinator.harness import http_json
from tests.coordinator.network import Net, reference_text

BOMBS = [
    b"[" * 100_000 + b"]" * 100_000,
    b'{"a":' * 50_000 + b"1" + b"}" * 50_000,
    b"[" * 200_000,
    b'{"job_id": 1e999, "x": NaN}',
    b'{"prompt": "\\ud800"}',
    b"\xff\xfe garbage",
    b"",
    b'"' + b"a" * 3_000_000 + b'"',  # a 3 MB string: over any JSON body limit
]
IDS = ["-1", "0", str(2**63), str(2**256), "abc", "1e3", "%00", "9" * 5000, "1"]


def _requests(seed: int, count: int) -> list[tuple[str, str, bytes]]:
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        job = rng.choice(IDS)
        method, path = rng.choice(
            [
                ("POST", "/v1/jobs/preflight"),
                ("POST", f"/v1/train/jobs/{job}/route"),
                ("POST", f"/v1/train/jobs/{job}/settle"),
                ("GET", f"/v1/train/jobs/{job}/route"),
                (
                    "GET",
                    "/dashboard/api/snapshot?"
                    + "&".join(f"a{i}=" + "b" * 100 for i in range(rng.randrange(50))),
                ),
                (
                    "GET",
                    f"/dashboard/assets/{rng.choice(['..%2F..%2Fetc%2Fpasswd', 'x' * 3000, '%00', 'app.js'])}",
                ),
                ("POST", "/dashboard/api/snapshot"),
                ("GET", f"/v1/jobs/{job}"),
            ]
        )
        out.append((method, path, rng.choice(BOMBS) if method == "POST" else b""))
    return out


def _send(url: str, method: str, path: str, body: bytes) -> int:
    req = urllib.request.Request(
        url + path, data=body or None, method=method, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            resp.read()
            return int(resp.status)
    except urllib.error.HTTPError as err:
        err.read()
        return int(err.code)
    except (ConnectionError, urllib.error.URLError):
        return 0  # the coordinator answered 413/400 and closed before the body was sent


def test_new_endpoints_answer_hostile_requests_with_4xx_and_the_coordinator_keeps_serving(net: Net) -> None:
    url = net.coordinator.url
    log_before = len(net.coordinator.log())
    requests = _requests(seed=11, count=400)
    with ThreadPoolExecutor(16) as pool:  # a concurrent flood
        statuses = list(pool.map(lambda r: (_send(url, *r), r), requests))
    server_errors = [(s, m, p[:80], b[:40]) for s, (m, p, b) in statuses if s >= 500]
    assert not server_errors, server_errors[:10]
    answered = [s for s, _ in statuses if s]
    assert len(answered) > len(statuses) * 0.9, statuses[:5]
    assert all(200 <= s < 500 for s in answered)
    assert net.coordinator.proc is not None and net.coordinator.proc.poll() is None
    assert http_json("GET", f"{url}/health")[0] == 200
    assert "Error handling request" not in net.coordinator.log()[log_before:]  # aiohttp's line for a 500
    prompt = "after the flood"
    outcome = net.client.submit(prompt, model="tiny-chat", max_tokens=4)
    assert outcome.text == reference_text(net, prompt, 4)[1]
