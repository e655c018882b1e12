"""The client library against a real anvil: nothing is paid when no coordinator answers, and a cancel
before the deadline says when it becomes possible."""

from __future__ import annotations

import pytest

from shardnet.chain.devnet import free_port
from shardnet.client import ClientError, ShardnetClient


def test_submit_pays_nothing_when_no_coordinator_answers(registry_for, accounts) -> None:
    owner, client_acct = registry_for(accounts[0]), registry_for(accounts[5])
    model_id = owner.register_model("m", "bafkreitest", 3, 10).event("ModelRegistered").args["modelId"]
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    owner.set_coordinator(accounts[1].address, dead, True)
    jobs_before, balance_before = owner.job_count(), owner.balance()

    with pytest.raises(ClientError, match="nothing was paid") as err:
        ShardnetClient(client_acct).submit("hello", model=model_id, max_tokens=4)
    assert dead in str(err.value)
    assert owner.job_count() == jobs_before
    assert owner.balance() == balance_before


def test_cancel_before_the_deadline_names_the_deadline(registry_for, accounts) -> None:
    owner, client_acct = registry_for(accounts[0]), registry_for(accounts[5])
    model_id = owner.register_model("m", "bafkreitest", 3, 10).event("ModelRegistered").args["modelId"]
    client = ShardnetClient(client_acct)
    job_id = client.pay("hello", model_id, 4, coordinator=accounts[1].address)
    with pytest.raises(ClientError, match=r"only after its deadline, \d{4}-\d\d-\d\d .* UTC") as err:
        client.cancel(job_id)
    assert "s from the chain's clock" in str(err.value)
    assert owner.get_job(job_id).status.name == "Open"


def test_an_output_read_header_is_the_signers_until_it_expires_and_never_after(accounts) -> None:
    from shardnet.client import MAX_OUTPUT_READ_VALID_S, output_reader, sign_output_read

    client, now = accounts[6], 1_800_000_000
    header = sign_output_read(client, 7, valid_s=300, now=now)
    assert output_reader(header, 7, now=now) == client.address.lower()
    assert output_reader(header, 7, now=now + 300) == client.address.lower()
    assert output_reader(header, 7, now=now + 301) is None  # a header seen once is useless after it expires
    assert output_reader(header, 8, now=now) != client.address.lower()  # another job's read
    forever = sign_output_read(client, 7, valid_s=10 * MAX_OUTPUT_READ_VALID_S, now=now)
    assert output_reader(forever, 7, now=now) is None  # a coordinator refuses long-lived reads
    expires, _, signature = header.partition(":")
    assert (
        output_reader(f"{int(expires) + 100}:{signature}", 7, now=now) != client.address.lower()
    )  # moved expiry
    for bad in (None, "", signature, "x:" + signature, "9" * 40 + ":" + signature, "1:2:3"):
        assert output_reader(bad, 7, now=now) is None


def test_a_prompt_handover_header_binds_job_prompt_and_sampling_until_it_expires(accounts) -> None:
    from shardnet.job_auth import (
        MAX_HANDOVER_VALID_S,
        handover_body,
        output_reader,
        prompt_handover_signer,
        sign_prompt_handover,
    )

    client, now = accounts[6], 1_800_000_000
    body = handover_body("hi", temperature=0.7, seed=3, chat=True)
    header = sign_prompt_handover(client, 7, body, valid_s=300, now=now)
    assert prompt_handover_signer(header, 7, body, now=now) == client.address.lower()
    assert prompt_handover_signer(header, 7, body, now=now + 301) is None  # expired
    assert prompt_handover_signer(header, 8, body, now=now) != client.address.lower()  # another job
    for changed in ({"temperature": 0.8}, {"top_p": 0.9}, {"seed": 4}, {"ignore_eos": True}, {"chat": False}):
        assert prompt_handover_signer(header, 7, {**body, **changed}, now=now) != client.address.lower()
    assert prompt_handover_signer(header, 7, {**body, "prompt": "hi!"}, now=now) != client.address.lower()
    assert output_reader(header, 7, now=now) != client.address.lower()  # not an output read either
    # absent parameters sign as the values sampled with: {"prompt"} alone is greedy, top_p 1, no seed, raw
    bare = sign_prompt_handover(client, 7, {"prompt": "hi"}, now=now)
    assert prompt_handover_signer(bare, 7, handover_body("hi", temperature=0, top_p=1), now=now) == (
        client.address.lower()
    )
    forever = sign_prompt_handover(client, 7, body, valid_s=10 * MAX_HANDOVER_VALID_S, now=now)
    assert prompt_handover_signer(forever, 7, body, now=now) is None
    for bad in (None, "", "x:0x00", "1:2:3"):
        assert prompt_handover_signer(bad, 7, body, now=now) is None
