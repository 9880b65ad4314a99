"""Who may say what to whom: the kinds of peer on an actor link and what each may send.

Every link is mutual TLS with a certificate of the tree's own CA, and the
certificate names the peer's kind (actors.wire.identity). A server answers a kind
only the requests its role needs; anything else is refused with ``forbidden``
before a handler runs, and logged. A gateway may ask a db_worker to log someone
in but not to change a user; only a worker's certificate may register a worker,
and only as its own kind; a plain TCP client gets no further than the TLS
handshake.

``admin`` is the operator's and the tools' kind (the test harness, chaos runs, the
benchmark): it may list workers and ping, nothing that reads or changes accounts.
"""

from __future__ import annotations

from typing import Final

from actors.wire import messages as m

GATEWAY: Final = "gateway"
POOL_MANAGER: Final = "pool_manager"
DB_WORKER: Final = "db_worker"
CACHE_WORKER: Final = "cache_worker"
ADMIN: Final = "admin"

KINDS: Final = (GATEWAY, POOL_MANAGER, DB_WORKER, CACHE_WORKER, ADMIN)
WORKER_KINDS: Final = (DB_WORKER, CACHE_WORKER)

_LEASING: Final = (m.AcquireLease, m.RenewLease, m.ReleaseLease)

#: server kind -> client kind -> the requests that client may send that server.
ALLOWED: Final[dict[str, dict[str, frozenset[type[m.Message]]]]] = {
    POOL_MANAGER: {
        DB_WORKER: frozenset({m.Register, m.Heartbeat, m.Ping}),
        CACHE_WORKER: frozenset({m.Register, m.Heartbeat, m.Ping, *_LEASING}),
        GATEWAY: frozenset({m.Ping, *_LEASING}),
        ADMIN: frozenset({m.ListWorkers, m.Ping}),
    },
    DB_WORKER: {
        # AvatarsInUse: the gateways' sweeper of unreferenced pictures (actors/web).
        GATEWAY: frozenset({m.CreateUser, m.Login, m.AvatarsInUse, m.Ping}),
        CACHE_WORKER: frozenset(
            {m.ResolveSession, m.TouchSession, m.UpdateUser, m.EndSession, m.Ping}
        ),
        ADMIN: frozenset({m.Ping}),
    },
    CACHE_WORKER: {
        GATEWAY: frozenset(
            {m.GetProfile, m.UpdateProfile, m.Logout, m.ThrottleAttempt, m.ThrottleSettle, m.Ping}
        ),
        ADMIN: frozenset({m.Ping}),
    },
}


def allowed(server_kind: str, client_kind: str) -> frozenset[type[m.Message]]:
    """What a peer of ``client_kind`` may ask a server of ``server_kind`` (maybe nothing)."""
    return ALLOWED.get(server_kind, {}).get(client_kind, frozenset())
