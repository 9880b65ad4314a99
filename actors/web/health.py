"""Liveness, readiness and the host's metrics, as the gateway serves them.

``/healthz`` answers while the process runs; ``/readyz`` only while this gateway
holds a connection to a db_worker and a cache_worker (supervisord and load
balancers can tell the two apart). Both are on the public port.

``/metrics`` is the Prometheus text of every actor on the host
(actors.runtime.metrics), gathered off the event loop. It is served only on the
admin listener (USERHUB_ADMIN_ADDR, loopback by default), an application of its
own: route names, error counts and pool sizes are for the operator, not for every
client of the API, and a scrape costs a walk over every process's metric files.
"""

from __future__ import annotations

import asyncio

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from actors.runtime import metrics
from actors.web.services import SERVICES
from actors.web.views import json_response


async def healthz(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
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


def add_routes(app: web.Application) -> None:
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)


def build_admin_app() -> web.Application:
    """The admin listener's application: /metrics and nothing else."""
    app = web.Application()
    app.router.add_get("/metrics", metrics_endpoint)
    return app
