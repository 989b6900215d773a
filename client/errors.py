"""Errors raised by the clients: one class per error kind the service names (by reply status
when the reply names none)."""

from __future__ import annotations

from typing import Any

from schemas.wire import ErrorKind


class WorkPoolsError(Exception):
    """A request failed; `status` is the HTTP-like reply status, `detail` what the service said."""

    def __init__(self, status: int, detail: Any) -> None:
        super().__init__(f"{status}: {detail}")
        self.status = status
        self.detail = detail


class ObjectNotFound(WorkPoolsError):
    pass


class ObjectAlreadyExists(WorkPoolsError):
    pass


class ObjectConflict(WorkPoolsError):
    """409 for anything but a taken name: e.g. deleting a pool's default queue."""


class Forbidden(WorkPoolsError):
    pass


class InvalidRequest(WorkPoolsError):
    pass


class ServiceUnavailable(WorkPoolsError):
    """The service could not serve the request now (503), or no reply came in time (504)."""


class RedisUnreachable(ServiceUnavailable):
    """Redis could not be reached (503 from the client itself, no replica was asked)."""


_BY_KIND: dict[str, type[WorkPoolsError]] = {
    ErrorKind.NOT_FOUND: ObjectNotFound,
    ErrorKind.ALREADY_EXISTS: ObjectAlreadyExists,
    ErrorKind.CONFLICT: ObjectConflict,
    ErrorKind.FORBIDDEN: Forbidden,
    ErrorKind.INVALID: InvalidRequest,
    ErrorKind.UNAVAILABLE: ServiceUnavailable,
}
_BY_STATUS: dict[int, type[WorkPoolsError]] = {
    403: Forbidden,
    404: ObjectNotFound,
    409: ObjectAlreadyExists,
    422: InvalidRequest,
    503: ServiceUnavailable,
    504: ServiceUnavailable,
}


def error_for(status: int, detail: Any, kind: str | None = None) -> WorkPoolsError:
    """The exception for an error reply: by its kind, else (an older service) by its status."""
    cls = _BY_KIND.get(kind) if kind is not None else None
    return (cls or _BY_STATUS.get(status, WorkPoolsError))(status, detail)


class ClientNotOpen(RuntimeError):
    """A client was used before `async with` opened it (or after it was closed)."""
