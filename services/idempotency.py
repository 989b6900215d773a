"""Idempotent requests: one effect per request id, and the same answer to every delivery.

A write runs in a unit of work that first records its request id (`request_log`); the reply is
stored in the same transaction as the effect. A repeat — a client retry with the same id, or a
redelivery after a crash — waits for the first to finish, finds the record, and gets its reply.
A request that failed rolled back entirely (record included) and may simply run again.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, select

from services.db import Database, Kind, Statement, with_outbox
from services.errors import Unavailable
from services.tables import request_log

KEEP = timedelta(hours=24)

LOG_REQUEST = Statement.of(
    """
    INSERT INTO request_log (request_id, op, created) VALUES (:request_id, :op, :now)
    ON CONFLICT (request_id) DO NOTHING
    RETURNING request_id
    """
)
"""The request's record, first in its unit of work: a repeat waits here (the primary key) until
the first commits or rolls back, then finds the record or takes its place."""
STORED_REPLY = Statement.of("SELECT status, reply::text AS reply FROM request_log WHERE request_id = :request_id")
RECORD_REPLY = with_outbox(
    "UPDATE request_log SET status = :status, reply = CAST(:reply AS jsonb) WHERE request_id = :request_id"
)
"""The reply, stored as the JSON text it is sent as (serialised once), and the request's events
into the outbox: the last round trip of every write before its commit (services.db.Statement)."""


@dataclass(frozen=True)
class Logged:
    """The record of a write done in one statement (`Database.one_statement`), which writes it
    itself: the request's id and operation, its reply's status, and how the reply is serialised."""

    request_id: str
    op: str
    status: int
    dump: Callable[[Any], bytes]


class Replayed(Exception):
    """This request id already ran: here is its reply (`reply`, as JSON text in `reply_json`)."""

    def __init__(self, status: int, reply_json: str | None) -> None:
        super().__init__(status)
        self.status, self.reply_json = status, reply_json

    @property
    def reply(self) -> Any:
        return None if self.reply_json is None else json.loads(self.reply_json)


@asynccontextmanager
async def once(db: Database, request_id: str, op: str) -> AsyncIterator[Callable[[int, Any], None]]:
    """Run the block once per `request_id`; the block calls `record(status, reply)`, `reply` a
    JSON-able value or (bytes) its JSON text already serialised."""
    recorded: dict[str, Any] = {}
    async with db.unit_of_work() as tx:
        if await tx.fetchrow(LOG_REQUEST, {"request_id": request_id, "op": op, "now": tx.now}) is None:
            stored = await tx.fetchrow(STORED_REPLY, {"request_id": request_id})
            if stored is None:  # forgotten (a day old) between the two statements: the caller asks again
                raise Unavailable("Service Unavailable")
            raise Replayed(stored["status"], stored["reply"])
        yield lambda status, reply: recorded.update(status=status, reply=reply)
        reply = recorded.get("reply")
        text = None if reply is None else reply.decode() if isinstance(reply, bytes) else json.dumps(reply)
        params = {"request_id": request_id, "status": recorded.get("status"), "reply": text}
        await tx.fetch(RECORD_REPLY, {**params, "events": tx.unwritten_events()})


async def forget_old(db: Database, now: datetime | None = None, batch: int = 5_000) -> int:
    """Request records older than a day are dropped (retries come within seconds), in batches
    (each well within the statement timeout, however many have piled up). Every replica runs it."""
    forgotten = 0
    while True:
        async with db.transaction(now, Kind.BACKGROUND) as tx:
            old = select(request_log.c.request_id).where(request_log.c.created < tx.now - KEEP).limit(batch)
            result = await tx.execute(delete(request_log).where(request_log.c.request_id.in_(old.scalar_subquery())))
        count = result.rowcount or 0
        forgotten += count
        if count < batch:
            return forgotten
