"""The coordinator's integration network, started once for every test module of this package that asks for it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.coordinator.network import Net, start_network, workers_view


@pytest.fixture(scope="package")
def net(tmp_path_factory, anvil, accounts) -> Iterator[Net]:
    yield from start_network(tmp_path_factory, anvil, accounts)


@pytest.fixture(autouse=True)
def no_honest_worker_slashed(request: pytest.FixtureRequest) -> Iterator[None]:
    """A property every test on the shared network checks itself (not one test at the end of a module): after the
    test, no worker of the network (all honest; a cheat is started apart) was slashed on chain, and the router
    excludes none of them."""
    if "net" not in request.fixturenames:
        yield
        return
    net: Net = request.getfixturevalue("net")
    start = net.owner.block_number()
    yield
    honest = {w.address.lower() for w in net.workers.values()}
    slashed = {
        e.args["node"].lower() for e in net.owner.get_logs(start, net.owner.block_number(), ["NodeSlashed"])
    }
    assert not slashed & honest, (
        f"honest workers slashed during {request.node.name}: {sorted(slashed & honest)}"
    )
    try:
        view = workers_view(net)
    except Exception:  # noqa: BLE001 - a test that left the coordinator down has no router to ask
        return
    excluded = sorted(a for a in honest if view.get(a, {}).get("excluded") or view.get(a, {}).get("benched"))
    assert not excluded, f"honest workers excluded from routing during {request.node.name}: {excluded}"
