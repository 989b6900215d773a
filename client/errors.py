"""Errors raised by the clients, one class per reply status."""

from __future__ import annotations

from typing import Any


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


class Forbidden(WorkPoolsError):
    pass


class InvalidRequest(WorkPoolsError):
    pass


class ServiceUnavailable(WorkPoolsError):
    """The service could not serve the request now (503), or no reply came in time (504)."""


_BY_STATUS = {
    403: Forbidden,
    404: ObjectNotFound,
    409: ObjectAlreadyExists,
    422: InvalidRequest,
    503: ServiceUnavailable,
    504: ServiceUnavailable,
}


def error_for(status: int, detail: Any) -> WorkPoolsError:
    return _BY_STATUS.get(status, WorkPoolsError)(status, detail)
