"""Issue 10 item 6 through the real processes (tests/coordinator/network.py): a cheat that no live check catches
(a coordinator started with --verify-share 0) is found after the settlement by the drawn verifiers, slashed, and
the job re-run on honest workers; a client that asked `hold_until_verified` gets, before its stream ends, the
cheat_detected error event with the correct text (a JSON answer: the corrected text and the report), and the
job's status endpoint carries the correction."""

from __future__ import annotations

import json
import signal
import threading
from typing import Any

import requests
from eth_account import Account

from shardnet.chain.tx import rpc
from shardnet.job_auth import AUTH_HEADER, sign_output_read
from tests.coordinator.harness import http_json, start_coordinator, wait_for
from tests.coordinator.network import Net, reference_text
from tests.worker.harness import start_worker

PROMPT = "hold the answer"
MAX_TOKENS = 40


def _funded(net: Net) -> Any:
    account = Account.create()
    rpc(net.owner.w3, "anvil_setBalance", [account.address, hex(10**22)])
    return account


def _post(url: str, stream: bool, out: dict[str, Any]) -> None:
    body = {"model": "tiny-chat", "prompt": PROMPT, "max_tokens": MAX_TOKENS, "temperature": 0}
    body |= {"stream": stream, "hold_until_verified": True}
    try:
        with requests.post(url + "/v1/completions", json=body, stream=stream, timeout=300) as resp:
            out["status"] = resp.status_code
            if not stream:
                out["json"] = resp.json()
                return
            out["lines"] = [line.decode() for line in resp.iter_lines() if line]
    except Exception as exc:  # noqa: BLE001 - the main thread reports it
        out["error"] = repr(exc)


def _events(lines: list[str]) -> list[Any]:
    return [json.loads(line[6:]) for line in lines if line.startswith("data: {")]


def test_a_cheat_found_after_the_settlement_reaches_the_client_that_held_its_answer(net: Net) -> None:
    coord_account, cheat_account = _funded(net), _funded(net)
    cheat = start_worker(
        net.tmp,
        cheat_account,
        net.dep_file,
        "tiny-chat",
        net.store,
        "--layers",
        "2:4",
        "--perturb-outputs",
        "0.5",
        "--drain-grace-s",
        "2",
        name="cheat-held",
    )
    coord = start_coordinator(
        net.tmp, coord_account.key.hex(), net.dep_file, net.store, "--verify-share", "0", name="coord-held"
    )
    honest = [
        net.workers["b"],
        net.workers["b2"],
    ]  # the other workers on 2:4: the verifiers the registry draws
    stopped = False
    mining = threading.Event()
    try:
        net.owner.set_coordinator(coord_account.address, coord.url, True)
        coord.wait_ready(timeout=300)
        cheat.wait_ready(timeout=300)

        def view() -> dict[str, Any]:
            return {w["node"]: w for w in http_json("GET", coord.url + "/v1/workers")[1]["workers"]}

        ours = [w.address.lower() for w in net.workers.values()] + [cheat_account.address.lower()]
        wait_for(lambda: all(a in view() and not view()[a]["down"] for a in ours), 60, "the 5 workers up")
        expected_tokens, expected = reference_text(net, PROMPT, MAX_TOKENS)

        for w in honest:  # paused: their /health probes time out, so both jobs are routed through the cheat
            w.signal(signal.SIGSTOP)
        stopped = True
        wait_for(lambda: all(view()[w.address.lower()]["down"] for w in honest), 20, "replicas down")
        streamed: dict[str, Any] = {}
        answered: dict[str, Any] = {}
        clients = [
            threading.Thread(target=_post, args=(coord.url, True, streamed)),
            threading.Thread(target=_post, args=(coord.url, False, answered)),
        ]
        for t in clients:
            t.start()

        def jobs() -> list[dict[str, Any]]:
            return list(http_json("GET", coord.url + "/v1/jobs")[1]["jobs"])

        wait_for(lambda: sum(j["status"] not in ("prompt", "routed") for j in jobs()) == 2, 60, "2 routed")
        for w in honest:
            w.signal(signal.SIGCONT)
        stopped = False
        wait_for(lambda: not any(view()[w.address.lower()]["down"] for w in honest), 20, "replicas back")

        def mine() -> (
            None
        ):  # the draw needs blockhash(closeBlock + 2): blocks keep coming, as on a real chain
            while not mining.wait(0.3):
                rpc(net.owner.w3, "evm_mine", [])

        threading.Thread(target=mine, daemon=True).start()
        for t in clients:
            t.join(timeout=300)
        assert "error" not in streamed and "error" not in answered, (streamed, answered)
        assert streamed["status"] == answered["status"] == 200, (streamed, answered)
        routes = {j["job_id"]: j["route"] for j in jobs()}
        views = {
            job_id: requests.get(
                f"{coord.url}/v1/jobs/{job_id}",
                headers={AUTH_HEADER: sign_output_read(coord_account, job_id)},
                timeout=10,
            ).json()
            for job_id in routes
        }
        anonymous = {job_id: http_json("GET", f"{coord.url}/v1/jobs/{job_id}")[1] for job_id in routes}
    finally:
        mining.set()
        if stopped:
            for w in honest:
                w.signal(signal.SIGCONT)
        coord.stop()
        cheat.stop()

    cheat_node = cheat_account.address.lower()
    assert all(any(h["node"] == cheat_node for h in r) for r in routes.values()), routes
    # the stream: the cheat's text, then (held) the cheat_detected event with the honest text, then its end
    events = _events(streamed["lines"])
    shown = "".join(e["choices"][0]["text"] for e in events if "choices" in e)
    errors = [i for i, e in enumerate(events) if "error" in e]
    assert len(errors) == 1 and errors[0] == len(events) - 2, events  # the last event is the finish chunk
    error = events[errors[0]]["error"]
    assert shown != expected and error["type"] == "cheat_detected", (shown, error)
    assert error["text"] == expected and error["slashed"] == [cheat_node]
    assert error["replaced"] and all(r["streamed"] != r["correct"] for r in error["replaced"])
    assert events[-1]["choices"][0]["finish_reason"] in ("stop", "length")
    assert ": verification cheat_detected" in streamed["lines"]
    # the JSON answer waited for the check: the corrected text, and the report
    data = answered["json"]
    report = data["shardnet_verification"]
    assert data["choices"][0]["text"] == expected and report["status"] == "cheat_detected", report
    assert report["correct_tokens"] == expected_tokens
    assert report["replaced_count"] == len(report["replaced"]) > 0 and report["slashed"] == [cheat_node]
    # the chain: the cheat slashed for both jobs
    slashed = net.owner.get_logs(0, net.owner.block_number(), ["NodeSlashed"])
    assert {int(e.args["jobId"]) for e in slashed if e.args["node"] == cheat_account.address} == set(routes)
    stream_job = int(events[0]["id"].split("-")[1])
    assert {stream_job, data["shardnet_job_id"]} == set(routes)
    # the status endpoint: the correction for the job's client, only the outcome for anyone else
    for job_id in routes:
        seen = views[job_id]["verification"]
        assert seen["status"] == "cheat_detected" and seen["correct_text"] == expected, seen
        assert seen["verifier_passes"] == 2 and seen["slashed"] == [cheat_node]  # 2 others on 2:4: both drawn
        other = anonymous[job_id]["verification"]
        assert (
            other["status"] == "cheat_detected"
            and "correct_text" not in other
            and other["replaced_count"] > 0
        )
