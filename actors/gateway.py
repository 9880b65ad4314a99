"""gateway: aiohttp on uvloop, the HTML pages and the JSON API; /metrics apart.

K gateway processes share one port (SO_REUSEPORT); the kernel spreads connections
among them. Each leases db_workers and cache_workers from the pool manager and
keeps a multiplexed connection to every leased worker. They share the admin
listener's port (/metrics, USERHUB_ADMIN_ADDR) the same way. Each also runs the
sweeper of unreferenced pictures, which works in one gateway per host at a time
(actors.web.avatar_sweeper).
"""

from __future__ import annotations

import asyncio
import contextlib

import structlog
from aiohttp import web

from actors.runtime import credentials, lifecycle
from actors.runtime.config import GatewayConfig
from actors.runtime.leasing import ManagerLink, WorkerPool
from actors.web import api, health, images, openapi, pages, throttle
from actors.web.avatar_sweeper import LOCK_FILE, AvatarSweeper, HostLock
from actors.web.bodies import HTTP_IDLE_TIMEOUT_S
from actors.web.image_store import LocalImageStore
from actors.web.middleware import observe
from actors.web.services import SERVICES, Services
from actors.web.upload_guard import UploadSlots
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
            upload_slots=UploadSlots(config.uploads.concurrent),
        )
        self.sweeper = AvatarSweeper(
            self.services.images,
            self.services.avatars_in_use,
            config.uploads,
            HostLock(config.common.var_dir / "run" / LOCK_FILE),
        )
        self._sweeping: asyncio.Task[None] | None = None
        # keepalive_timeout also bounds how long a new connection may take to send its
        # first request head (aiohttp starts the timer when the connection opens):
        # slowloris defence.
        self.runner = web.AppRunner(
            build_app(self.services),
            access_log=None,
            handler_cancellation=True,
            keepalive_timeout=HTTP_IDLE_TIMEOUT_S,
        )
        self.admin_runner = web.AppRunner(
            health.build_admin_app(), access_log=None, keepalive_timeout=HTTP_IDLE_TIMEOUT_S
        )

    async def start(self) -> None:
        self.services.db.start()
        self.services.cache.start()
        await self.runner.setup()
        host, port = self.config.http_addr
        await web.TCPSite(self.runner, host, port, reuse_port=True, backlog=2048).start()
        log.info("listening", addr=f"http://{host}:{port}")
        await self.admin_runner.setup()
        admin_host, admin_port = self.config.admin_addr
        await web.TCPSite(self.admin_runner, admin_host, admin_port, reuse_port=True).start()
        log.info("admin_listening", addr=f"http://{admin_host}:{admin_port}/metrics")
        self._sweeping = asyncio.create_task(self.sweeper.run_forever())

    async def stop(self) -> None:
        if self._sweeping is not None:
            self._sweeping.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeping
        await self.runner.cleanup()
        await self.admin_runner.cleanup()
        await self.services.db.close()
        await self.services.cache.close()
        self.link.close()


def main() -> None:
    config = GatewayConfig.from_env()
    lifecycle.run("gateway", config.common.log_level, lambda _: Gateway(config))


if __name__ == "__main__":
    main()
