"""A write is answered once per request id: its reply is stored with its effect, and a repeat
(a client retry, a redelivery after a replica died) gets that reply without acting again.

Which requests are writes is the operation table's to say (`schemas.operations`).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from faststream.redis import RedisResponse
from faststream.redis.message import RedisStreamMessage

from handlers.rpc import jsonable
from schemas import wire
from schemas.operations import Operation
from services import idempotency
from services.db import Database
from transport.envelope import respond, respond_json

log = logging.getLogger("workpools")


def request_id(message: RedisStreamMessage) -> str:
    """The client's `request_id` header, or the stream entry the request first arrived as."""
    raw = message.raw_message
    return message.headers.get("request_id") or wire.entry_request_id(raw["channel"], raw["message_ids"][0])


InOne = Callable[[idempotency.Logged], Awaitable[bytes | None]]
"""An operation's write in one statement, its record included (`handlers.rpc.in_one_statement`):
the stored reply's JSON text, or None when it did nothing and the write goes the usual way."""


async def answer_once(
    db: Database,
    request_id: str,
    operation: Operation,
    handle: Callable[[], Awaitable[Any]],
    in_one: InOne | None = None,
) -> RedisResponse:
    """Run `handle()` once per request id, its reply stored with its effect; a repeat waits for
    the first to finish and gets the stored reply. A failure rolls back, record included.
    `in_one`, when the operation has it, is tried first."""
    if in_one is not None:
        reply = await in_one(idempotency.Logged(request_id, operation.op, operation.status, operation.dump_reply))
        if reply is not None:
            return respond_json(operation.status, reply)
    try:
        async with idempotency.once(db, request_id, operation.op) as record:
            result = await handle()
            # serialised once, by the reply's type: the stored reply and the one sent are this text
            reply = jsonable(result) if operation.reply is None else operation.dump_reply(result)
            record(operation.status, reply)
    except idempotency.Replayed as replayed:
        log.info("request %s (%s) already ran; answering its reply again", request_id, operation.op)
        return _reply(replayed.status, None if replayed.reply_json is None else replayed.reply_json.encode())
    return _reply(operation.status, reply)


def _reply(status: int, reply: Any) -> RedisResponse:
    if isinstance(reply, bytes):
        return respond_json(status, reply)
    return respond(status, reply)
