"""Issue 12 item 4: a database records the chain it belongs to (chain id, registry, genesis block hash).

Two fresh anvil devnets, each with the registry deployed by the same account at the same nonce (so the same
address, as after restarting a devnet), and one data dir used against both: the second start is refused with
a message that names --reset-state, nothing is sent on chain, and --reset-state clears the old state.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from coordinator.cli import main as coordinator_main
from shardnet.chain.deploy import Deployment, deploy_registry
from shardnet.chain.devnet import Devnet, free_port
from shardnet.chain.identity import identity_of
from shardnet.chain.registry import Registry
from shardnet.chain.tx import reset_nonce_managers
from shardnet.db import (
    Base,
    ChainCursor,
    ChainMismatch,
    check_chain_identity,
    make_engine,
    session_scope,
    write_cursor,
)
from tests.fixtures_chain import TEST_PARAMS
from worker.cli import main as worker_main


@pytest.fixture(scope="module")
def two_devnets(tmp_path_factory, accounts, tiny_llama_store) -> Iterator[list[tuple[Devnet, Deployment]]]:
    tmp = tmp_path_factory.mktemp("two-devnets")
    _, cid, _ = tiny_llama_store
    chains: list[tuple[Devnet, Deployment]] = []
    try:
        for name in ("first", "second"):
            devnet = Devnet.start("anvil", log_file=tmp / f"{name}.log")
            deployment = deploy_registry(devnet.web3(), accounts[0], TEST_PARAMS)
            deployment.save(tmp / f"{name}.json")
            Registry(devnet.web3(), deployment.registry, accounts[0]).register_model("tiny", cid, 4, 1)
            chains.append((devnet, deployment))
            reset_nonce_managers()  # the second devnet starts its nonces at 0 again
            time.sleep(1.1)  # a restart comes later: its deploy block has another timestamp
        yield chains
    finally:
        for devnet, _ in chains:
            devnet.stop()
        reset_nonce_managers()


def _registry(devnet: Devnet, deployment: Deployment) -> Registry:
    return Registry(devnet.web3(), deployment.registry, None, deploy_block=deployment.deploy_block)


def test_two_devnets_with_the_same_registry_address_are_told_apart(two_devnets, tmp_path: Path) -> None:
    (a, dep_a), (b, dep_b) = two_devnets
    first, second = identity_of(_registry(a, dep_a)), identity_of(_registry(b, dep_b))
    assert first.chain_id == second.chain_id and first.registry == second.registry
    assert first != second

    engine = make_engine(None, default_path=tmp_path / "state.db")
    check_chain_identity(engine, "worker", first)
    Base.metadata.create_all(engine, tables=[ChainCursor.__table__])
    with session_scope(engine) as db:
        write_cursor(db, "worker:0xabc", 1234)  # state of the first chain
    check_chain_identity(engine, "worker", first)  # the same chain again: fine
    with pytest.raises(ChainMismatch, match="another chain .* Start with --reset-state"):
        check_chain_identity(engine, "worker", second)
    check_chain_identity(engine, "coordinator", second)  # another role's row is its own
    check_chain_identity(engine, "worker", second, reset=True)
    with session_scope(engine) as db:
        assert db.get(ChainCursor, "worker:0xabc") is None
    with pytest.raises(ChainMismatch):
        check_chain_identity(engine, "worker", first)


def _cli(
    main,
    argv: list[str],
    env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> tuple[int, str]:
    with monkeypatch.context() as m:
        for key, value in env.items():
            m.setenv(key, value)
        capsys.readouterr()
        code = main(argv)
        return code, capsys.readouterr().err


def test_worker_and_coordinator_refuse_a_data_dir_of_another_devnet(
    two_devnets,
    tmp_path: Path,
    tiny_llama_store,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    store, _, _ = tiny_llama_store
    unfunded = "0x" + "42" * 32  # gets through every check, then cannot pay its stake: nothing is sent
    env = {"IDENTITY_KEY": unfunded}
    data = tmp_path / "data"
    deployments = [dep.save(tmp_path / f"{devnet.port}.json") for devnet, dep in two_devnets]

    def worker(dep_file: Path, *extra: str) -> tuple[int, str]:
        return _cli(
            worker_main,
            [
                "run",
                "--deployment",
                str(dep_file),
                "--key-env",
                "IDENTITY_KEY",
                "--model",
                "tiny",
                "--layers",
                "0:2",
                "--store-dir",
                str(store),
                "--data-dir",
                str(data / "worker"),
                "--host",
                "127.0.0.1",
                "--port",
                str(free_port()),
                *extra,
            ],
            env,
            monkeypatch,
            capsys,
        )

    def coordinator(dep_file: Path, *extra: str) -> tuple[int, str]:
        return _cli(
            coordinator_main,
            [
                "run",
                "--deployment",
                str(dep_file),
                "--key-env",
                "IDENTITY_KEY",
                "--data-dir",
                str(data / "coordinator"),
                "--store-dir",
                str(store),
                "--host",
                "127.0.0.1",
                "--port",
                str(free_port()),
                *extra,
            ],
            env,
            monkeypatch,
            capsys,
        )

    code, err = worker(deployments[0])
    assert code == 1 and "cannot register" in err, err  # the first devnet: the database now records it
    code, err = worker(deployments[1])
    assert code == 1 and "holds the worker's state of another chain" in err and "--reset-state" in err, err
    code, err = worker(deployments[1], "--reset-state")
    assert code == 1 and "cannot register" in err, err

    code, err = coordinator(deployments[0])
    assert code == 1 and "not an approved coordinator" in err, err
    code, err = coordinator(deployments[1])
    assert code == 1 and "holds the coordinator's state of another chain" in err and "--reset-state" in err, (
        err
    )
    code, err = coordinator(deployments[1], "--reset-state")
    assert code == 1 and "not an approved coordinator" in err, err
