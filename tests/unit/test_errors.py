"""Error kinds: each service error names its kind; the client picks its exception by kind, and by
status when the reply names none (an older service)."""

import pytest

from client.errors import (
    Forbidden,
    InvalidRequest,
    ObjectAlreadyExists,
    ObjectConflict,
    ObjectNotFound,
    ServiceUnavailable,
    WorkPoolsError,
    error_for,
)
from schemas.wire import ErrorKind
from services import errors


@pytest.mark.parametrize(
    ("error", "status", "kind"),
    [
        (errors.NotFound("x"), 404, "not_found"),
        (errors.AlreadyExists("x"), 409, "already_exists"),
        (errors.Conflict("x"), 409, "conflict"),
        (errors.Forbidden("x"), 403, "forbidden"),
        (errors.Invalid("x"), 422, "invalid"),
        (errors.Unavailable("x"), 503, "unavailable"),
        (errors.internal_error(), 500, "internal"),
    ],
)
def test_each_service_error_has_a_status_and_a_kind(error, status, kind):
    assert (error.status, str(error.kind)) == (status, kind)


@pytest.mark.parametrize(
    ("status", "kind", "expected"),
    [
        (409, ErrorKind.CONFLICT, ObjectConflict),
        (409, ErrorKind.ALREADY_EXISTS, ObjectAlreadyExists),
        (409, None, ObjectAlreadyExists),
        (404, "not_found", ObjectNotFound),
        (403, "forbidden", Forbidden),
        (422, "invalid", InvalidRequest),
        (503, "unavailable", ServiceUnavailable),
        (504, None, ServiceUnavailable),
        (500, "internal", WorkPoolsError),
        (409, "a-kind-from-a-newer-service", ObjectAlreadyExists),
        (418, None, WorkPoolsError),
    ],
)
def test_the_client_exception_follows_the_kind_then_the_status(status, kind, expected):
    error = error_for(status, "the detail", kind)
    assert (type(error), error.status, error.detail) == (expected, status, "the detail")
