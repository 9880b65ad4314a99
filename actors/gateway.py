"""gateway: aiohttp on uvloop, the HTML pages, the JSON API and /metrics.

K gateway processes share one port (SO_REUSEPORT); the kernel spreads connections
among them. Each leases db_workers and cache_workers from the pool manager and
keeps a multiplexed connection to every leased worker.
"""

from __future__ import annotations

import structlog
from aiohttp import web

from actors.runtime import credentials, lifecycle
from actors.runtime.config import GatewayConfig
from actors.runtime.leasing import ManagerLink, WorkerPool
from actors.web import api, health, images, openapi, pages, throttle
from actors.web.bodies import HTTP_IDLE_TIMEOUT_S
from actors.web.image_store import LocalImageStore
from actors.web.middleware import observe
from actors.web.services import SERVICES, Services
from actors.wire.roles import GATEWAY

log = structlog.get_logger("gateway")


def build_app(services: Services) -> web.Application:
    app = web.Application(
        middlewares=[observe], client_max_size=images.MAX_UPLOAD_BYTES + 64 * 1024
    )
    app[SERVICES] = services
    api.add_routes(app)
    app.router.add_get(openapi.PATH, openapi.serve)
    pages.setup(app, services.config)
    health.add_routes(app)
    return app


class Gateway:
    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        self.link = ManagerLink(
            config.common.manager_addr, credentials.identity(config.common, GATEWAY)
        )
        db = WorkerPool(self.link, "db_worker", caller="gateway", want=config.db_leases)
        cache = WorkerPool(self.link, "cache_worker", caller="gateway", want=config.cache_leases)
        self.services = Services(
            config=config,
            db=db,
            cache=cache,
            images=LocalImageStore(config.image_dir),
            throttle=throttle.Throttles.from_config(config, cache),
        )
        throttle.install(self.services.throttle)
        # keepalive_timeout also bounds how long a new connection may take to send its
        # first request head (aiohttp starts the timer when the connection opens):
        # slowloris defence.
        self.runner = web.AppRunner(
            build_app(self.services),
            access_log=None,
            handler_cancellation=True,
            keepalive_timeout=HTTP_IDLE_TIMEOUT_S,
        )

    async def start(self) -> None:
        self.services.db.start()
        self.services.cache.start()
        await self.runner.setup()
        host, port = self.config.http_addr
        await web.TCPSite(self.runner, host, port, reuse_port=True, backlog=2048).start()
        log.info("listening", addr=f"http://{host}:{port}")

    async def stop(self) -> None:
        await self.runner.cleanup()
        await self.services.db.close()
        await self.services.cache.close()
        self.link.close()


def main() -> None:
    config = GatewayConfig.from_env()
    lifecycle.run("gateway", config.common.log_level, lambda _: Gateway(config))


if __name__ == "__main__":
    main()
