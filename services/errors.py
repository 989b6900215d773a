"""The one error vocabulary of workpools; handlers map each kind to a reply status in one table."""

from __future__ import annotations

from typing import Any


class WorkPoolsError(Exception):
    """A failure the caller should hear about, with an HTTP-like status and a detail."""

    status = 500

    def __init__(self, detail: Any) -> None:
        super().__init__(detail)
        self.detail = detail


class NotFound(WorkPoolsError):
    status = 404


class AlreadyExists(WorkPoolsError):
    status = 409


class Conflict(WorkPoolsError):
    status = 409


class Forbidden(WorkPoolsError):
    status = 403


class Invalid(WorkPoolsError):
    status = 422


class Unavailable(WorkPoolsError):
    status = 503


INTEGRITY_CONFLICT = (
    "Data integrity conflict. This usually means a unique or foreign key constraint was violated. "
    "See server logs for details."
)


def pool_not_found(name: str) -> NotFound:
    return NotFound(f'Work pool "{name}" not found.')


def queue_not_found(pool_name: str, queue_name: str) -> NotFound:
    return NotFound(f"Work pool queue '{pool_name}/{queue_name}' not found.")
