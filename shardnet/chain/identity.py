"""Which deployment a Registry talks to, as the `shardnet.db.ChainIdentity` a database records."""

from __future__ import annotations

from typing import Any

from shardnet.chain.tx import chain_id
from shardnet.db import ChainIdentity


def identity_of(registry: Any) -> ChainIdentity:
    """The ChainIdentity of a `shardnet.chain.registry.Registry`'s deployment (three reads from its node)."""
    genesis = registry.w3.eth.get_block(0)["hash"]
    deployed = registry.w3.eth.get_block(int(registry.deploy_block))["hash"]
    return ChainIdentity(
        chain_id(registry.w3),
        str(registry.address).lower(),
        "0x" + bytes(genesis).hex(),
        "0x" + bytes(deployed).hex(),
    )
