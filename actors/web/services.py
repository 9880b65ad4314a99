"""What every route of one gateway process reaches through: config, pools, stores.

Built once per process (actors/gateway.py) and kept on the aiohttp application
under :data:`SERVICES`. Calls to workers carry the request's id as their trace id
and the gateway's request deadline; each call's reply type is the one its request
names (actors.wire.messages), so a route gets a typed answer or an error.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from aiohttp import web

from actors.runtime.config import GatewayConfig
from actors.runtime.leasing import WorkerPool
from actors.web.image_store import ImageStore
from actors.web.middleware import REQUEST_ID
from actors.web.throttle import Throttles
from actors.web.upload_guard import UploadSlots
from actors.wire import messages
from actors.wire.messages import R, Request


@dataclass
class Services:
    config: GatewayConfig
    db: WorkerPool
    cache: WorkerPool
    images: ImageStore
    throttle: Throttles
    upload_slots: UploadSlots

    def deadline(self) -> float:
        return time.time() + self.config.common.request_timeout_s

    async def call_db(self, request: web.Request, message: Request[R]) -> R:
        return await self.db.call(message, deadline=self.deadline(), trace_id=request[REQUEST_ID])

    async def call_cache(self, request: web.Request, message: Request[R]) -> R:
        return await self.cache.call(
            message, deadline=self.deadline(), trace_id=request[REQUEST_ID]
        )

    async def avatars_in_use(self, keys: tuple[str, ...], trace_id: str) -> tuple[str, ...]:
        """Which of ``keys`` some account references (the orphan sweeper's question)."""
        found = await self.db.call(
            messages.AvatarsInUse(keys=keys), deadline=self.deadline(), trace_id=trace_id
        )
        return found.keys


SERVICES = web.AppKey("services", Services)
