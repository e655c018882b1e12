"""The coordinator's chain watcher is woken by new blocks pushed over anvil's websocket: a job submitted for it is
known to it within a second although it polls only every 30 s (the benchmark `scripts/bench.py events` prints
the milliseconds)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

from eth_account.signers.local import LocalAccount

from coordinator.config import load_config
from coordinator.service import CoordinatorService
from shardnet.chain.registry import Registry
from tests.fixtures_chain import DevChain


def test_a_job_submitted_reaches_the_coordinator_pushed_not_polled(
    anvil: DevChain, registry_for: Callable[..., Registry], accounts: list[LocalAccount], tmp_path: Path
) -> None:
    owner, me, client = accounts[0], accounts[7], accounts[8]
    registry_for(owner).set_coordinator(me.address, "http://127.0.0.1:9", True)
    model_id = int(
        registry_for(owner).register_model("m", "bafk", 2, 1).event("ModelRegistered").args["modelId"]
    )
    cfg = load_config(
        {"data_dir": tmp_path, "store_dir": tmp_path / "store", "port": 0, "poll_interval_s": 30.0}, None, {}
    )
    service = CoordinatorService(cfg, registry_for(me), me)

    async def go() -> tuple[float, int]:
        await service.start()
        try:
            assert service.heads is not None and await asyncio.to_thread(service.heads.wait_connected, 10)
            await asyncio.sleep(0.3)
            sender = registry_for(client)
            result = await asyncio.to_thread(
                sender.submit_job, model_id, b"\x02" * 32, 4, me.address, sender.quote(model_id, 4)
            )
            mined = time.perf_counter()
            job_id = int(result.event("JobSubmitted").args["jobId"])
            while service.state.get_job(job_id) is None and time.perf_counter() - mined < 5:
                await asyncio.sleep(0.005)
            assert service.state.get_job(job_id) is not None, "the coordinator never saw its job"
            return time.perf_counter() - mined, job_id
        finally:
            await service.stop()

    delay, _job_id = asyncio.run(go())
    assert delay < 1.0, f"the coordinator saw its job {delay:.2f} s after it was mined: polled, not pushed"
