"""Every message any actor sends, in one module that all of them import.

Messages are immutable msgspec Structs encoded as JSON, so a captured packet stays
readable and a new optional field (with a default) stays backward compatible. Each
type has a stable numeric code that travels in the frame header; the body alone
does not say what it is. Actors never touch raw bytes: :mod:`actors.wire.protocol` turns
these records into frames and back.
"""

from __future__ import annotations

import msgspec


class Message(msgspec.Struct, frozen=True, forbid_unknown_fields=False):
    """Base of every message. Unknown fields are ignored for forward compatibility."""


# -- generic -------------------------------------------------------------------------


class Error(Message, frozen=True):
    """The reply to any request that failed. ``code`` is stable; see actors.wire.errors."""

    code: str
    message: str
    retriable: bool = False
    field: str | None = None
    retry_after_s: int = 0


class Ack(Message, frozen=True):
    pass


class Ping(Message, frozen=True):
    pass


class Pong(Message, frozen=True):
    kind: str = ""
    pid: int = 0


# -- pool manager: registration of workers ------------------------------------------


class Register(Message, frozen=True):
    """A worker announces itself on a connection it keeps open for its whole life."""

    kind: str  # "db_worker" | "cache_worker"
    host: str
    port: int
    capacity: int
    pid: int
    metrics_addr: str = ""
    mysql_wanted: int = 0  # db_workers: connections wanted from the global budget
    ready: bool = False


class Registered(Message, frozen=True):
    worker_id: str
    mysql_granted: int = 0
    heartbeat_interval_s: float = 1.0


class Heartbeat(Message, frozen=True):
    in_flight: int = 0
    ready: bool = True


class HeartbeatAck(Message, frozen=True):
    pass


# -- pool manager: leases -------------------------------------------------------------


class AcquireLease(Message, frozen=True):
    kind: str
    exclude: tuple[str, ...] = ()


class LeaseGranted(Message, frozen=True):
    lease_id: str
    worker_id: str
    host: str
    port: int
    ttl_s: float


class RenewLease(Message, frozen=True):
    lease_id: str


class LeaseRenewed(Message, frozen=True):
    ttl_s: float


class ReleaseLease(Message, frozen=True):
    lease_id: str


class ListWorkers(Message, frozen=True):
    kind: str = ""


class WorkerInfo(Message, frozen=True):
    worker_id: str
    kind: str
    host: str
    port: int
    pid: int
    capacity: int
    ready: bool
    leases: int
    in_flight: int
    mysql_granted: int
    metrics_addr: str = ""


class WorkerList(Message, frozen=True):
    workers: tuple[WorkerInfo, ...]
    mysql_budget: int = 0
    mysql_granted: int = 0
    leases: int = 0


# -- users and sessions -------------------------------------------------------------


class User(Message, frozen=True):
    """A user's public record. ``version`` grows by one with every change."""

    user_id: int
    username: str
    nickname: str
    avatar_key: str | None
    created_at: float
    version: int


class CreateUser(Message, frozen=True):
    username: str
    password: str
    nickname: str
    idempotency_key: str = ""


class Login(Message, frozen=True):
    username: str
    password: str


class LoginResult(Message, frozen=True):
    token: str  # shown to the client once; only its SHA-256 is stored
    user: User
    expires_at: float  # absolute expiry
    idle_timeout_s: float


class ResolveSession(Message, frozen=True):
    """db_worker: who owns this session (by token hash), if it is still valid."""

    token_hash: str


class SessionInfo(Message, frozen=True):
    user: User
    expires_at: float
    last_seen: float
    idle_timeout_s: float


class TouchSession(Message, frozen=True):
    """db_worker: record activity on a session so its idle expiry slides."""

    token_hash: str


class UpdateUser(Message, frozen=True):
    """db_worker: change a user's nickname and/or avatar; applied at most once per key."""

    user_id: int
    idempotency_key: str
    nickname: str | None = None
    avatar_key: str | None = None


class EndSession(Message, frozen=True):
    """db_worker: delete a session (log out)."""

    token_hash: str


class GetProfile(Message, frozen=True):
    """cache_worker: the profile of the session's owner."""

    token_hash: str


class Profile(Message, frozen=True):
    user: User
    cache_hit: bool = False


class UpdateProfile(Message, frozen=True):
    """cache_worker: change the session owner's profile, then refresh the cache."""

    token_hash: str
    idempotency_key: str
    nickname: str | None = None
    avatar_key: str | None = None


class Logout(Message, frozen=True):
    """cache_worker: end the session in MySQL and revoke it in the cache."""

    token_hash: str


# -- login throttling, shared by every gateway (counted in Redis by a cache_worker) ----


class ThrottleCheck(Message, frozen=True):
    """cache_worker: is any of these failure counters at its limit?"""

    keys: tuple[str, ...]
    limits: tuple[int, ...]


class ThrottleVerdict(Message, frozen=True):
    retry_after_s: int  # 0: go ahead
    counted: bool = False  # some key has failures on record (a success should clear)


class ThrottleUpdate(Message, frozen=True):
    """cache_worker: count a failure under ``failed`` keys, forget ``cleared`` ones."""

    failed: tuple[str, ...] = ()
    cleared: tuple[str, ...] = ()
    window_s: int = 60


# -- the registry of wire codes (never reuse or renumber a code) --------------------

TYPE_CODES: dict[type[Message], int] = {
    Error: 1,
    Ack: 2,
    Ping: 3,
    Pong: 4,
    Register: 10,
    Registered: 11,
    Heartbeat: 12,
    HeartbeatAck: 13,
    AcquireLease: 20,
    LeaseGranted: 21,
    RenewLease: 22,
    LeaseRenewed: 23,
    ReleaseLease: 24,
    ListWorkers: 25,
    WorkerInfo: 26,
    WorkerList: 27,
    User: 40,
    CreateUser: 41,
    Login: 42,
    LoginResult: 43,
    ResolveSession: 44,
    SessionInfo: 45,
    TouchSession: 46,
    UpdateUser: 47,
    EndSession: 48,
    GetProfile: 60,
    Profile: 61,
    UpdateProfile: 62,
    Logout: 63,
    ThrottleCheck: 64,
    ThrottleVerdict: 65,
    ThrottleUpdate: 66,
}

TYPES_BY_CODE: dict[int, type[Message]] = {code: cls for cls, code in TYPE_CODES.items()}
