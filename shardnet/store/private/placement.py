"""Placement on nodes the chain knows: a storage node URL must be the endpoint of a registered, unjailed node."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from shardnet.errors import ConfigError

if TYPE_CHECKING:
    from shardnet.chain.registry import Registry


def registered_endpoints(registry: Registry) -> dict[str, str]:
    """Endpoint URL (no trailing '/') -> address, for every registered node that is not jailed."""
    out: dict[str, str] = {}
    for account in sorted(registry.known_accounts()):
        node = registry.get_node(account)
        if node.registered and not node.jailed and node.endpoint:
            out[node.endpoint.rstrip("/")] = node.address
    return out


def check_registered(registry: Registry, nodes: Sequence[str]) -> dict[str, str]:
    """The on-chain address of each storage node URL; ``ConfigError`` naming every URL the registry does not know."""
    endpoints = registered_endpoints(registry)
    unknown = [u for u in nodes if u.rstrip("/") not in endpoints]
    if unknown:
        raise ConfigError(
            f"storage nodes {', '.join(unknown)} are not the endpoint of a registered, unjailed node on the registry "
            f"{registry.address}: register them (stake, with that endpoint) or leave them out"
        )
    return {u: endpoints[u.rstrip("/")] for u in nodes}
