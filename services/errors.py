"""The one error vocabulary of workpools: each error carries its reply status and its kind."""

from __future__ import annotations

from typing import Any

from schemas.wire import ErrorKind


class WorkPoolsError(Exception):
    """A failure the caller should hear about: an HTTP-like status, its kind, and a detail."""

    status = 500
    kind = ErrorKind.INTERNAL

    def __init__(self, detail: Any) -> None:
        super().__init__(detail)
        self.detail = detail


class NotFound(WorkPoolsError):
    status = 404
    kind = ErrorKind.NOT_FOUND


class AlreadyExists(WorkPoolsError):
    status = 409
    kind = ErrorKind.ALREADY_EXISTS


class Conflict(WorkPoolsError):
    """The request contradicts the data in another way than a taken name (same status)."""

    status = 409
    kind = ErrorKind.CONFLICT


class Forbidden(WorkPoolsError):
    status = 403
    kind = ErrorKind.FORBIDDEN


class Invalid(WorkPoolsError):
    status = 422
    kind = ErrorKind.INVALID


class Unavailable(WorkPoolsError):
    status = 503
    kind = ErrorKind.UNAVAILABLE


class TimedOut(Unavailable):
    """The database gave up on a timeout, or did not answer in time: `reason` says which
    (statement, lock, idle_in_transaction, not_answered, no_connection)."""

    def __init__(self, detail: Any, reason: str) -> None:
        super().__init__(detail)
        self.reason = reason


def internal_error() -> WorkPoolsError:
    """What a caller hears about an unexpected exception (logged where it happened)."""
    return WorkPoolsError("Internal Server Error")


INTEGRITY_CONFLICT = (
    "Data integrity conflict. This usually means a unique or foreign key constraint was violated. "
    "See server logs for details."
)


def pool_not_found(name: str) -> NotFound:
    return NotFound(f'Work pool "{name}" not found.')


def queue_not_found(pool_name: str, queue_name: str) -> NotFound:
    return NotFound(f"Work pool queue '{pool_name}/{queue_name}' not found.")
