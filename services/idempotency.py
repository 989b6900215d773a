"""Idempotent requests: one effect per request id, and the same answer to every delivery.

A write runs in a unit of work that first records its request id (`request_log`); the reply is
stored in the same transaction as the effect. A repeat — a client retry with the same id, or a
redelivery after a crash — waits for the first to finish, finds the record, and gets its reply.
A request that failed rolled back entirely (record included) and may simply run again.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert

from services.db import Database
from services.tables import request_log

KEEP = timedelta(hours=24)


class Replayed(Exception):
    """This request id already ran: here is its reply."""

    def __init__(self, status: int, reply: Any) -> None:
        super().__init__(status)
        self.status, self.reply = status, reply


@asynccontextmanager
async def once(db: Database, request_id: str, op: str) -> AsyncIterator[Callable[[int, Any], None]]:
    """Run the block once per `request_id`; the block calls `record(status, reply)`."""
    recorded: dict[str, Any] = {}
    async with db.unit_of_work() as tx:
        inserted = await tx.execute(
            pg_insert(request_log)
            .values(request_id=request_id, op=op, created=tx.now)
            .on_conflict_do_nothing()
            .returning(request_log.c.request_id)
        )
        if inserted.first() is None:
            stored = (
                await tx.execute(
                    select(request_log.c.status, request_log.c.reply).where(request_log.c.request_id == request_id)
                )
            ).one()
            raise Replayed(stored.status, stored.reply)
        yield lambda status, reply: recorded.update(status=status, reply=reply)
        await tx.execute(
            update(request_log)
            .where(request_log.c.request_id == request_id)
            .values(status=recorded.get("status"), reply=recorded.get("reply"))
        )


async def forget_old(db: Database, now: datetime | None = None, batch: int = 5_000) -> int:
    """Request records older than a day are dropped (retries come within seconds), in batches
    (each well within the statement timeout, however many have piled up). Every replica runs it."""
    forgotten = 0
    while True:
        async with db.transaction(now) as tx:
            old = select(request_log.c.request_id).where(request_log.c.created < tx.now - KEEP).limit(batch)
            result = await tx.execute(delete(request_log).where(request_log.c.request_id.in_(old.scalar_subquery())))
        count = result.rowcount or 0
        forgotten += count
        if count < batch:
            return forgotten
