"""Every message any actor sends, in one module that all of them import.

Messages are immutable msgspec Structs encoded as JSON, so a captured packet stays
readable and a new optional field (with a default) stays backward compatible. Each
type has a stable numeric code that travels in the frame header; the body alone
does not say what it is. Actors never touch raw bytes: :mod:`actors.wire.protocol`
turns these records into frames and back.

Every request names its reply: ``GetProfile`` is a ``Request[Profile]``. The caller's
side (:meth:`actors.wire.rpc.Connection.call`) checks the type that comes back, and
each actor accepts one union of requests (``DbWorkerRequest`` and its siblings at
the end of this module) and dispatches on it with ``match``, so mypy proves every
request of a role is handled and every call site gets the reply type it expects.
"""

from __future__ import annotations

import typing
from typing import Annotated, Generic, TypeVar

import msgspec


class Message(msgspec.Struct, frozen=True, forbid_unknown_fields=False):
    """Base of every message. Unknown fields are ignored for forward compatibility."""


R = TypeVar("R", bound=Message)


class Request(Message, Generic[R], frozen=True):
    """A message that asks for an answer; ``R`` is the type of a successful reply."""


#: SHA-256 of a session token, as lowercase hex. The shape is checked when a frame is
#: decoded, so no handler ever sees anything else under this name.
TokenHash = Annotated[str, msgspec.Meta(pattern=r"\A[0-9a-f]{64}\Z")]


# -- generic -------------------------------------------------------------------------


class Error(Message, frozen=True):
    """The reply to any request that failed. ``code`` is stable; see actors.wire.errors."""

    code: str
    message: str
    retriable: bool = False
    field: str | None = None
    retry_after_s: int = 0


class Ack(Message, frozen=True):
    """The reply to a request that has nothing to say but "done"."""


class Pong(Message, frozen=True):
    kind: str = ""
    pid: int = 0


class Ping(Request[Pong], frozen=True):
    pass


# -- pool manager: registration of workers ------------------------------------------


class Registered(Message, frozen=True):
    worker_id: str
    mysql_granted: int = 0
    heartbeat_interval_s: float = 1.0


class Register(Request[Registered], frozen=True):
    """A worker announces itself on a connection it keeps open for its whole life."""

    kind: str  # "db_worker" | "cache_worker"
    host: str
    port: int
    capacity: int
    pid: int
    mysql_wanted: int = 0  # db_workers: connections wanted from the global budget
    ready: bool = False


class HeartbeatAck(Message, frozen=True):
    pass


class Heartbeat(Request[HeartbeatAck], frozen=True):
    in_flight: int = 0
    ready: bool = True


# -- pool manager: leases -------------------------------------------------------------


class LeaseGranted(Message, frozen=True):
    lease_id: str
    worker_id: str
    host: str
    port: int
    ttl_s: float


class AcquireLease(Request[LeaseGranted], frozen=True):
    kind: str
    exclude: tuple[str, ...] = ()


class LeaseRenewed(Message, frozen=True):
    ttl_s: float


class RenewLease(Request[LeaseRenewed], frozen=True):
    lease_id: str


class ReleaseLease(Request[Ack], frozen=True):
    lease_id: str


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


class WorkerList(Message, frozen=True):
    workers: tuple[WorkerInfo, ...]
    mysql_budget: int = 0
    mysql_granted: int = 0
    leases: int = 0


class ListWorkers(Request[WorkerList], frozen=True):
    kind: str = ""


# -- users and sessions: db_worker ----------------------------------------------------


class User(Message, frozen=True):
    """A user's public record. ``version`` grows by one with every change."""

    user_id: int
    username: str
    nickname: str
    avatar_key: str | None
    created_at: float
    version: int


class CreateUser(Request[User], frozen=True):
    username: str
    password: str
    nickname: str
    idempotency_key: str = ""


class LoginResult(Message, frozen=True):
    token: str  # shown to the client once; only its SHA-256 is stored
    user: User
    expires_at: float  # absolute expiry
    idle_timeout_s: float


class Login(Request[LoginResult], frozen=True):
    username: str
    password: str


class SessionInfo(Message, frozen=True):
    user: User
    expires_at: float
    last_seen: float
    idle_timeout_s: float


class ResolveSession(Request[SessionInfo], frozen=True):
    """db_worker: who owns this session (by token hash), if it is still valid."""

    token_hash: TokenHash


class TouchSession(Request[Ack], frozen=True):
    """db_worker: record activity on a session so its idle expiry slides."""

    token_hash: TokenHash


class UpdateUser(Request[User], frozen=True):
    """db_worker: change a user's nickname and/or avatar; applied at most once per key."""

    user_id: int
    idempotency_key: str
    nickname: str | None = None
    avatar_key: str | None = None


class EndSession(Request[Ack], frozen=True):
    """db_worker: delete a session (log out)."""

    token_hash: TokenHash


#: The most picture keys one AvatarsInUse may ask about: one bounded query, one
#: small frame (a key is at most 68 characters).
MAX_AVATAR_KEYS = 500


class AvatarKeys(Message, frozen=True):
    keys: tuple[str, ...]


class AvatarsInUse(Request[AvatarKeys], frozen=True):
    """db_worker: which of these picture keys some account references (the sweeper's
    question before it deletes a stored picture)."""

    keys: Annotated[tuple[str, ...], msgspec.Meta(max_length=MAX_AVATAR_KEYS)]


# -- profiles and sessions: cache_worker ----------------------------------------------


class Profile(Message, frozen=True):
    user: User
    cache_hit: bool = False


class GetProfile(Request[Profile], frozen=True):
    """cache_worker: the profile of the session's owner."""

    token_hash: TokenHash


class UpdateProfile(Request[Profile], frozen=True):
    """cache_worker: change the session owner's profile, then refresh the cache."""

    token_hash: TokenHash
    idempotency_key: str
    nickname: str | None = None
    avatar_key: str | None = None


class Logout(Request[Ack], frozen=True):
    """cache_worker: end the session in MySQL and revoke it in the cache."""

    token_hash: TokenHash


# -- throttles, shared by every gateway (counted in Redis by a cache_worker) -----------


class ThrottleRule(Message, frozen=True):
    """One counter an attempt is counted under, and the policy it is judged by.

    Below ``limit`` attempts the window is fixed: it starts with the first attempt
    and the count vanishes with it. With ``backoff_cap_ms`` 0 the limit-th attempt
    blocks the key until the window ends; otherwise it blocks it for one window,
    and each further admitted attempt doubles the block, up to the cap; the key is
    forgotten one window after its block ends.
    """

    key: str
    limit: int
    window_ms: int
    backoff_cap_ms: int = 0


class ThrottleAnswer(Message, frozen=True):
    retry_after_ms: int = 0  # 0: the attempt is counted under every key, go ahead


class ThrottleAttempt(Request[ThrottleAnswer], frozen=True):
    """cache_worker: if no key is blocked, count one attempt under every key (atomically)."""

    rules: tuple[ThrottleRule, ...]


class ThrottleSettle(Request[Ack], frozen=True):
    """cache_worker: after an attempt's outcome, ``forget`` keys and ``refund`` one attempt."""

    forget: tuple[str, ...] = ()
    refund: tuple[ThrottleRule, ...] = ()


# -- what each actor accepts -----------------------------------------------------------

ManagerRequest = (
    Register | Heartbeat | AcquireLease | RenewLease | ReleaseLease | ListWorkers | Ping
)
DbWorkerRequest = (
    CreateUser
    | Login
    | ResolveSession
    | TouchSession
    | UpdateUser
    | EndSession
    | AvatarsInUse
    | Ping
)
CacheWorkerRequest = GetProfile | UpdateProfile | Logout | ThrottleAttempt | ThrottleSettle | Ping


def members(union: object) -> tuple[type[Message], ...]:
    """The message classes of one of the unions above, for run-time checks."""
    return typing.get_args(union)


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
    AvatarsInUse: 49,
    AvatarKeys: 50,
    GetProfile: 60,
    Profile: 61,
    UpdateProfile: 62,
    Logout: 63,
    # 64-66: retired (the check-then-count throttle); never reuse them.
    ThrottleAttempt: 67,
    ThrottleAnswer: 68,
    ThrottleSettle: 69,
    ThrottleRule: 70,
}

TYPES_BY_CODE: dict[int, type[Message]] = {code: cls for cls, code in TYPE_CODES.items()}


def _reply_of(cls: type[Message]) -> type[Message] | None:
    for base in getattr(cls, "__orig_bases__", ()):
        if typing.get_origin(base) is Request:
            (reply,) = typing.get_args(base)
            return typing.cast(type[Message], reply)
    return None


_REPLY_TYPES: dict[type[Message], type[Message]] = {
    cls: reply for cls in TYPE_CODES if (reply := _reply_of(cls)) is not None
}


def reply_type(request: Request[R]) -> type[R]:
    """The message class a successful reply to ``request`` must have."""
    return typing.cast(type[R], _REPLY_TYPES[type(request)])


def is_request(message: Message) -> bool:
    return type(message) in _REPLY_TYPES
