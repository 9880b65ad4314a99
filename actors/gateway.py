"""gateway: aiohttp on uvloop, the HTML pages, the JSON API and /metrics.

K gateway processes share one port (SO_REUSEPORT); the kernel spreads connections
among them. Each leases db_workers and cache_workers from the pool manager and
keeps a multiplexed connection to every leased worker.
"""

from __future__ import annotations

import asyncio
import signal

import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from actors.runtime import gc_tuning, logs, metrics
from actors.runtime.config import GatewayConfig
from actors.runtime.leasing import ManagerLink, WorkerPool
from actors.web import api, images, openapi, pages
from actors.web.common import HTTP_IDLE_TIMEOUT_S, json_response, observe
from actors.web.throttle import Limits, LoginThrottle, SharedLoginThrottle

log = structlog.get_logger("gateway")


async def healthz(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    services = request.app[api.SERVICES]
    body = {
        "ready": services.db.ready and services.cache.ready,
        "db_workers": services.db.connected_workers,
        "cache_workers": services.cache.connected_workers,
    }
    return json_response(body, status=200 if body["ready"] else 503)


async def metrics_endpoint(request: web.Request) -> web.Response:
    data = await asyncio.to_thread(metrics.scrape)
    response = web.Response(body=data)
    response.headers["Content-Type"] = CONTENT_TYPE_LATEST
    return response


def build_app(services: api.Services) -> web.Application:
    app = web.Application(
        middlewares=[observe], client_max_size=images.MAX_UPLOAD_BYTES + 64 * 1024
    )
    app[api.SERVICES] = services
    api.add_routes(app)
    app.router.add_get(openapi.PATH, openapi.serve)
    pages.setup(app, services.config)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_endpoint)
    return app


async def main() -> None:
    config = GatewayConfig.from_env()
    logs.configure("gateway", config.common.log_level)
    metrics.started("gateway")
    link = ManagerLink(config.common.manager_addr)
    db = WorkerPool(link, "db_worker", caller="gateway", want=config.db_leases)
    cache = WorkerPool(link, "cache_worker", caller="gateway", want=config.cache_leases)
    db.start()
    cache.start()
    throttle = SharedLoginThrottle(
        LoginThrottle(
            Limits(
                per_pair=config.login_failures_per_pair,
                per_address=config.login_failures_per_address,
                per_account=config.login_failures_per_account,
                window_s=config.login_window_s,
            )
        ),
        cache,
    )
    services = api.Services(
        config=config,
        db=db,
        cache=cache,
        images=images.LocalImageStore(config.image_dir),
        throttle=throttle,
    )
    app = build_app(services)
    # keepalive_timeout also bounds how long a new connection may take to send its first
    # request head (aiohttp starts the timer when the connection opens): slowloris defence.
    runner = web.AppRunner(
        app, access_log=None, handler_cancellation=True, keepalive_timeout=HTTP_IDLE_TIMEOUT_S
    )
    await runner.setup()
    host, port = config.http_addr
    site = web.TCPSite(runner, host, port, reuse_port=True, backlog=2048)
    await site.start()
    gc_tuning.tune_after_start()
    log.info("listening", addr=f"http://{host}:{port}")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("draining")
    await runner.cleanup()
    await db.close()
    await cache.close()
    link.close()
    log.info("stopped")


if __name__ == "__main__":
    import uvloop

    uvloop.run(main())
