"""Only a job's client hands over its prompt, with the sampling parameters it signed (issue 11, item 4): against the
real network (tests/coordinator/network.py), a stranger who knows the prompt, a body changed after the client signed
it, another job's, an expired and a too long-lived signature are all 401 and the job does not start; the client's own
hand-over is served."""

from __future__ import annotations

from typing import Any

from shardnet.chain.registry import JobStatus
from shardnet.http_json import request_json
from shardnet.job_auth import AUTH_HEADER, MAX_HANDOVER_VALID_S, handover_body, sign_prompt_handover
from tests.coordinator.harness import http_json
from tests.coordinator.network import Net, reference_text


def _hand_over(net: Net, job_id: int, body: dict[str, Any], auth: str | None) -> tuple[int, Any]:
    headers = {AUTH_HEADER: auth} if auth is not None else None
    return request_json(
        "POST", f"{net.coordinator.url}/v1/jobs/{job_id}/prompt", body, timeout=30, headers=headers
    )


def _refused(status: int, answer: Any, why: str) -> None:
    assert status == 401, (status, answer)
    error = answer["error"]
    assert error["type"] == "invalid_request_error", answer
    assert "only the client of job" in error["message"] and why in error["message"], answer
    assert "sign_prompt_handover" in error["message"], answer  # it says what to do


def test_only_the_jobs_client_hands_over_its_prompt_with_the_parameters_it_signed(net: Net, accounts) -> None:
    prompt = "hi"  # short prompts are guessable: knowing it must not be enough
    job_id = net.client.pay(prompt, net.model_id, 4)
    body = {"prompt": prompt}  # the defaults (greedy, no seed, raw) are signed as handover_body(prompt)
    client, stranger = net.client_account, accounts[7]

    for auth in (None, "", "0xnonsense", "1:0x" + "00" * 65):
        _refused(*_hand_over(net, job_id, body, auth), "missing, malformed or expired")
    _refused(*_hand_over(net, job_id, body, sign_prompt_handover(stranger, job_id, body)), "another key")
    expired = sign_prompt_handover(client, job_id, body, valid_s=-1)
    _refused(*_hand_over(net, job_id, body, expired), "expired")
    forever = sign_prompt_handover(client, job_id, body, valid_s=10 * MAX_HANDOVER_VALID_S)
    _refused(*_hand_over(net, job_id, body, forever), "expired")
    other_job = sign_prompt_handover(client, job_id + 1, body)
    _refused(*_hand_over(net, job_id, body, other_job), "another key")

    signed = sign_prompt_handover(client, job_id, body)
    for changed in (
        {"temperature": 1.5},
        {"top_p": 0.5},
        {"seed": 7},
        {"ignore_eos": True},
        {"chat": True},
        {"temperature": 1.5, "seed": 7},
    ):  # parameters chosen after the client signed: the signature recovers another address
        _refused(*_hand_over(net, job_id, {**body, **changed}, signed), "other sampling parameters")
    _refused(*_hand_over(net, job_id, {**body, "prompt": "hi "}, signed), "another prompt")

    # nothing of the refused hand-overs started the job or was kept
    assert net.owner.get_job(job_id).status == JobStatus.Open
    status, view = http_json("GET", f"{net.coordinator.url}/v1/jobs/{job_id}")
    assert status == 404 or view["status"] == "submitted", (status, view)

    # the client's own, with exactly the parameters it signed (defaults spelled out sign the same)
    explicit = handover_body(prompt, temperature=0, top_p=1, seed=None)
    assert sign_prompt_handover(client, job_id, explicit, now=0) == sign_prompt_handover(
        client, job_id, body, now=0
    )
    status, view = _hand_over(net, job_id, body, signed)
    assert status == 202, view
    final = net.client.wait(net.coordinator.url, job_id, timeout_s=120)
    net.client.check(job_id, final)
    assert final["output"] == reference_text(net, prompt, 4)[1]
    # a second hand-over, even the client's own with other parameters, replaces nothing
    again = {**body, "temperature": 1.5}
    status, answer = _hand_over(net, job_id, again, sign_prompt_handover(client, job_id, again))
    assert status == 409, answer
