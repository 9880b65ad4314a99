"""The few errors userhub knows, split by who is at fault.

Every error has a stable ``code`` (it travels on the wire and reaches HTTP
clients) and a ``retriable`` flag that tells a caller whether trying again,
possibly on another worker, can succeed. Three families, as in supervisor's
Faults: the caller's mistake (4xx), a dependency that failed (MySQL, Redis, a
peer worker: 503) and our own bug (500).
"""

from __future__ import annotations

from typing import ClassVar


class UserhubError(Exception):
    """Base of every error that may cross the wire."""

    code: ClassVar[str] = "internal"
    http_status: ClassVar[int] = 500
    retriable: ClassVar[bool] = False

    def __init__(self, message: str = "", *, field: str | None = None) -> None:
        super().__init__(message or self.code)
        self.message = message or self.code
        self.field = field


# -- the caller's fault -----------------------------------------------------------------


class CallerError(UserhubError):
    code = "bad_request"
    http_status = 400


class InvalidInput(CallerError):
    code = "invalid_input"
    http_status = 422


class UsernameTaken(CallerError):
    code = "username_taken"
    http_status = 409


class InvalidCredentials(CallerError):
    code = "invalid_credentials"
    http_status = 401


class Unauthenticated(CallerError):
    code = "unauthenticated"
    http_status = 401


class NotFound(CallerError):
    code = "not_found"
    http_status = 404


class PayloadTooLarge(CallerError):
    code = "payload_too_large"
    http_status = 413


class RequestTimeout(CallerError):
    """The client took too long to send its request body."""

    code = "request_timeout"
    http_status = 408


class UnsupportedMediaType(CallerError):
    code = "unsupported_media_type"
    http_status = 415


class Throttled(CallerError):
    code = "throttled"
    http_status = 429

    def __init__(self, message: str = "", *, retry_after_s: int = 1) -> None:
        super().__init__(message or "too many attempts, try again later")
        self.retry_after_s = retry_after_s


class Forbidden(CallerError):
    """The caller is who it says, but its role does not allow this request."""

    code = "forbidden"
    http_status = 403


class CsrfFailed(CallerError):
    """A form did not carry a valid CSRF token: it is stale, or it came from another site."""

    code = "csrf_failed"
    http_status = 403


class LeaseUnknown(CallerError):
    """The pool manager does not know this lease (expired, or the manager restarted)."""

    code = "lease_unknown"
    http_status = 409


# -- a dependency's fault ---------------------------------------------------------------


class DependencyError(UserhubError):
    code = "unavailable"
    http_status = 503
    retriable = True


class DatabaseUnavailable(DependencyError):
    code = "database_unavailable"


class CacheUnavailable(DependencyError):
    code = "cache_unavailable"


class NoWorker(DependencyError):
    """No live worker of the wanted kind could be leased in time."""

    code = "no_worker"


class Busy(DependencyError):
    """The worker is at its connection or in-flight limit; try another one."""

    code = "busy"


class PoolExhausted(DependencyError):
    """Every connection of a pool was in use for the whole acquire timeout."""

    code = "pool_exhausted"


class ConnectionLost(DependencyError):
    """The connection to a peer closed or failed while a call was in flight."""

    code = "connection_lost"


class DeadlineExceeded(DependencyError):
    code = "deadline_exceeded"
    http_status = 504


class ManagerUnavailable(DependencyError):
    code = "manager_unavailable"


# -- our own fault ----------------------------------------------------------------------


class InternalError(UserhubError):
    code = "internal"
    http_status = 500


class ProtocolError(InternalError):
    """A frame could not be decoded; the connection that carried it is closed."""

    code = "protocol_error"


def _all_subclasses(cls: type[UserhubError]) -> list[type[UserhubError]]:
    out: list[type[UserhubError]] = []
    for sub in cls.__subclasses__():
        out.append(sub)
        out.extend(_all_subclasses(sub))
    return out


def _registry() -> dict[str, type[UserhubError]]:
    """Every error of this module by its code. Every error userhub sends is defined
    here, so the registry is whole when the module is; a test walks every package
    of the project to prove no error is defined anywhere else."""
    by_code: dict[str, type[UserhubError]] = {}
    for cls in _all_subclasses(UserhubError):
        if cls.code in by_code:
            raise TypeError(f"{cls.__name__} and {by_code[cls.code].__name__} share {cls.code!r}")
        by_code[cls.code] = cls
    return by_code


BY_CODE: dict[str, type[UserhubError]] = _registry()


def from_code(
    code: str, message: str, *, field: str | None = None, retry_after_s: int = 0
) -> UserhubError:
    """Rebuild the error a peer sent; an unknown code becomes an internal error."""
    cls = BY_CODE.get(code, InternalError)
    if cls is Throttled:
        return Throttled(message, retry_after_s=max(1, retry_after_s))
    return cls(message, field=field)
