"""The one table from exceptions to reply statuses; every request gets an answer."""

from __future__ import annotations

import logging
from typing import Any

from faststream.redis import RedisResponse
from pydantic import ValidationError
from pydantic_core import PydanticSerializationError, to_json

from schemas.common import error_details
from schemas.wire import ERROR_HEADER
from services.errors import Invalid, WorkPoolsError, internal_error
from transport.envelope import respond

log = logging.getLogger("workpools")


def error_reply(error: WorkPoolsError) -> RedisResponse:
    """An error's reply: its status, its kind (header `error`) and `{"detail": ...}`."""
    return respond(error.status, {"detail": error.detail}, headers={ERROR_HEADER: error.kind})


def replyable(details: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Validation errors as a reply can carry them: the reply encoder stops at a nesting depth
    of about 250, so an input nested deeper (`[[[[…]]]]`) is left out rather than losing the reply."""
    try:
        to_json(details)
    except PydanticSerializationError:
        return [{key: value for key, value in detail.items() if key != "input"} for detail in details]
    return details


def as_error(exc: Exception) -> WorkPoolsError:
    """The one table: what the caller hears about an exception, for every way a message comes
    in (the stream RPCs through the request gate, `replica.request_gate`, the worker channel)."""
    if isinstance(exc, WorkPoolsError):
        return exc
    if isinstance(exc, ValidationError):
        return Invalid(replyable(error_details(exc)))
    log.error("unexpected error while handling a request", exc_info=exc)
    return internal_error()


def refuse_oversized(msg: Any, limit: int) -> None:
    """A request over `limit` bytes is answered 422 without being parsed further."""
    if len(msg.body or b"") > limit:
        raise Invalid(f"Request body is larger than {limit} bytes.")
