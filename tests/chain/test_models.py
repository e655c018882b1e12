"""One model lookup by name or id (shardnet.chain.models) for the client, the worker and the coordinator's API,
on a real anvil where two models share a name."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from eth_account.signers.local import LocalAccount

from shardnet.chain import models
from shardnet.chain.models import AmbiguousModelName, UnknownModel, resolve_model
from shardnet.chain.registry import Registry
from shardnet.client import ClientError, ShardnetClient
from shardnet.errors import ConfigError


@pytest.fixture
def twins(registry_for: Callable[..., Registry], accounts: list[LocalAccount]) -> Registry:
    """Models 1 and 2 are both 'SmolLM2' (two owners), 3 is 'other', 4 is named '3'."""
    registry_for(accounts[7]).register_model("SmolLM2", "bafkreifirst", 30, 7)
    registry_for(accounts[8]).register_model("SmolLM2", "bafkreisecond", 30, 1)
    registry_for(accounts[8]).register_model("other", "bafkreiother", 4, 1)
    registry_for(accounts[8]).register_model("3", "bafkreidigits", 4, 1)
    return registry_for(None)


def test_a_shared_name_is_refused_with_the_ids(twins: Registry, accounts: list[LocalAccount]) -> None:
    with pytest.raises(AmbiguousModelName) as caught:
        resolve_model(twins, "SmolLM2")
    assert caught.value.ids == [1, 2]
    message = str(caught.value)
    assert "ids 1 (owner" in message and ", 2 (owner" in message and "pass the id" in message
    assert accounts[7].address in message and "bafkreisecond" in message
    assert isinstance(caught.value, ConfigError)  # reported like every other configuration error


@pytest.mark.parametrize(
    ("given", "model_id"), [(1, 1), ("2", 2), (" 2 ", 2), ("other", 3), (3, 3), ("3", 3)]
)
def test_an_id_always_works_and_a_unique_name_resolves(
    twins: Registry, given: str | int, model_id: int
) -> None:
    info = resolve_model(twins, given)
    assert info == twins.get_model(model_id)


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ("tiny", "no model named 'tiny' on chain (registered: 3, SmolLM2, other)"),
        (0, "no model 0 on chain: model ids run from 1 to 4"),
        ("5", "no model 5 on chain: model ids run from 1 to 4"),
        ("", "no model given"),
        (None, "no model given"),
    ],
)
def test_unknown_models_say_what_is_there(twins: Registry, given: str | int | None, message: str) -> None:
    with pytest.raises(UnknownModel, match="^" + message.replace("(", r"\(").replace(")", r"\)")):
        resolve_model(twins, given)


def test_an_empty_registry_says_so(registry: Registry) -> None:
    with pytest.raises(UnknownModel, match="no model is registered yet"):
        resolve_model(registry, 1)
    with pytest.raises(UnknownModel, match=r"registered: none"):
        resolve_model(registry, "SmolLM2")


def test_the_client_uses_the_one_lookup(twins: Registry) -> None:
    client = ShardnetClient(twins)
    with pytest.raises(
        ClientError, match=r"2 models are registered under the name 'SmolLM2': ids 1 .*pass the id"
    ):
        client.model_id("SmolLM2")  # it used to pay for model 1 here
    assert (client.model_id(2), client.model_id("2"), client.model_id("other")) == (2, 2, 3)
    with pytest.raises(ClientError, match="no model 9 on chain"):
        client.model_id(9)  # it used to take any number without asking the chain


def test_the_worker_uses_the_one_lookup() -> None:
    from worker import node

    assert node.resolve_model is models.resolve_model  # it used to take the newest of a shared name
