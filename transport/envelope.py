"""FastStream message format for the JSON envelope of `schemas.wire` (language-neutral)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from faststream.redis import RedisResponse
from faststream.redis.parser.binary import BinaryMessageFormatV1

from schemas import wire
from schemas.common import MAX_JSON_DEPTH, json_depth_error
from services.errors import Invalid


class JSONEnvelope(BinaryMessageFormatV1):
    """Writes `{"data": ..., "headers": ...}` JSON; reads it, FastStream's binary format, or raw JSON."""

    @classmethod
    async def encode(
        cls,
        *,
        message: Any,
        reply_to: str | None,
        headers: dict[str, Any] | None,
        correlation_id: str,
        serializer: Any = None,
        codec: Any = None,
    ) -> bytes:
        msg = await cls.build(
            message=message,
            reply_to=reply_to,
            headers=headers,
            correlation_id=correlation_id,
            serializer=serializer,
            codec=codec,
        )
        return wire.encode_raw(msg.data, {k: str(v) for k, v in msg.headers.items()})


async def decode_body(msg: Any, original: Callable[[Any], Awaitable[Any]]) -> Any:
    """FastStream's decoding, except that a body nested deeper than Python's JSON parser goes
    (`[[[[…]]]]`, a RecursionError) is a bad request (422), not an unexpected error (500); and a
    body nested deeper than `MAX_JSON_DEPTH` is refused here (422, error type `json_too_deep`),
    before anything else walks it."""
    try:
        body = await original(msg)
    except RecursionError:
        raise Invalid(f"Request body nests deeper than {MAX_JSON_DEPTH} levels.") from None
    error = json_depth_error(body)
    if error is not None:
        raise Invalid([error])
    return body


def respond(status: int, body: Any = None, headers: dict[str, str] | None = None) -> RedisResponse:
    """A reply in the JSON envelope, with its HTTP-like status header (and any `headers`)."""
    return RedisResponse(body, headers={**(headers or {}), "status": str(status)}, message_format=JSONEnvelope)


def respond_json(status: int, data: bytes) -> RedisResponse:
    """A reply whose body is already JSON text (`Operation.dump_reply`)."""
    return RedisResponse(
        data, headers={"content-type": "application/json", "status": str(status)}, message_format=JSONEnvelope
    )
