"""The one table from exceptions to reply statuses; every request gets an answer."""

from __future__ import annotations

import logging
from typing import Any

from faststream import BaseMiddleware, ExceptionMiddleware
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
    in (the stream RPCs through `error_middleware`, the worker channel through `as_error`)."""
    if isinstance(exc, WorkPoolsError):
        return exc
    if isinstance(exc, ValidationError):
        return Invalid(replyable(error_details(exc)))
    log.error("unexpected error while handling a request", exc_info=exc)
    return internal_error()


def error_middleware() -> ExceptionMiddleware:
    errors = ExceptionMiddleware()

    @errors.add_handler(Exception, publish=True)
    async def any_error(exc: Exception) -> RedisResponse:
        return error_reply(as_error(exc))

    return errors


class SizeLimit(BaseMiddleware):
    """Requests over `limit` bytes are answered 422 without being parsed further."""

    limit = 1_048_576

    async def consume_scope(self, call_next: Any, msg: Any) -> Any:
        if len(msg.body or b"") > self.limit:
            raise Invalid(f"Request body is larger than {self.limit} bytes.")
        return await call_next(msg)


def size_limit(limit: int) -> type[SizeLimit]:
    return type("SizeLimitOf", (SizeLimit,), {"limit": limit})
