"""The coordinator's HTTP app: the jobs API (`coordinator.jobs_api`), the OpenAI-compatible API
(`coordinator.openai_api`), fine-tuning routes and settlements (`coordinator.training_api`), and two service
endpoints:

    GET  /v1/workers            the live workers as routing sees them (down, excluded, benched, load, measurements)
    GET  /health
    GET  /dashboard             the network dashboard (`coordinator.dashboard`), and / redirecting to it
"""

from __future__ import annotations

from dataclasses import asdict

from aiohttp import web

from coordinator import dashboard, jobs_api, openai_api, training_api
from coordinator.http_common import MAX_BODY_BYTES, SERVICE
from coordinator.preflight import preflight_routes
from coordinator.service import CoordinatorService
from shardnet.chain.timing import CHAIN_CLOCK


async def health(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    coalescer = service.jobs.runner.ctx.coalescer
    return web.json_response(
        {
            "ok": True,
            "coordinator": service.account.address,
            "workers": len(service.directory.nodes()),
            # seconds this process waited for registry reads and transactions, per function (a benchmark's share)
            "chain_wait": CHAIN_CLOCK.snapshot(),
            "step_coalescing": asdict(coalescer.stats) if coalescer is not None else None,
        }
    )


async def list_workers(request: web.Request) -> web.Response:
    return web.json_response(
        {
            "workers": request.app[SERVICE].directory.describe(),
            "admission": request.app[openai_api.ADMISSION].describe(),
        }
    )


def make_app(service: CoordinatorService) -> web.Application:
    app = web.Application(client_max_size=MAX_BODY_BYTES)
    app[SERVICE] = service
    app.add_routes([web.get("/health", health), web.get("/v1/workers", list_workers)])
    app.add_routes(jobs_api.ROUTES)
    openai_api.install(app, service)
    app.add_routes(preflight_routes())
    app.add_routes(service.push_answers.routes())  # POST /v1/push/answers: push mode's direct answers
    training_api.install(app)  # POST /v1/train/jobs/{id}/route|settle: fine-tuning jobs (docs/finetune.md)
    dashboard.mount(app, service)  # GET /dashboard (and / when free): read-only, see coordinator.dashboard
    return app
