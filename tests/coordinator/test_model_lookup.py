"""The OpenAI API's "model" field goes through shardnet.chain.models.resolve_model (tests/chain/test_models.py):
a name two models share is refused with their ids, as it is for the client and the worker."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest
from eth_account.signers.local import LocalAccount

from coordinator.openai_api import _resolve_model
from shardnet.chain.registry import Registry
from shardnet.errors import ConfigError


def resolve(registry: Registry, name: Any, api_model_id: int = 0) -> int:
    # the two attributes _resolve_model reads of a CoordinatorService, around a real registry on anvil
    service = SimpleNamespace(registry=registry, config=SimpleNamespace(api_model_id=api_model_id))
    return asyncio.run(_resolve_model(service, name))  # type: ignore[arg-type]


def test_the_api_refuses_a_shared_name_and_takes_ids(
    registry_for: Callable[..., Registry], accounts: list[LocalAccount]
) -> None:
    views = registry_for(None)
    with pytest.raises(ConfigError, match="no model is registered on chain"):
        resolve(views, None)
    registry_for(accounts[7]).register_model("SmolLM2", "bafkreifirst", 30, 7)
    registry_for(accounts[8]).register_model("SmolLM2", "bafkreisecond", 30, 1)
    with pytest.raises(ConfigError, match=r"under the name 'SmolLM2': ids 1 .*, 2 .*pass the id"):
        resolve(views, "SmolLM2")  # it used to serve model 1 here
    assert (
        resolve(views, "2"),
        resolve(views, 1),
        resolve(views, None),
        resolve(views, "", api_model_id=2),
    ) == (
        2,
        1,
        1,
        2,
    )
    with pytest.raises(ConfigError, match="no model named 'gpt-4'"):
        resolve(views, "gpt-4")
    with pytest.raises(ConfigError, match='"model" must be a model name or id'):
        resolve(views, ["SmolLM2"])
