"""The coordinator's integration network, started once for every test module of this package that asks for it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.coordinator.network import Net, start_network


@pytest.fixture(scope="package")
def net(tmp_path_factory, anvil, accounts) -> Iterator[Net]:
    yield from start_network(tmp_path_factory, anvil, accounts)
