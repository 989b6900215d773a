"""Committed events onto the `{prefix}.events` stream.

A change writes its events to the outbox table in its own transaction (`services.db`). After the
commit, the committing replica appends them to the stream itself (`publish`), pipelined with the
other commits of the same loop turn, before the request is answered; their outbox rows are deleted
afterwards, many commits' in one statement, off the request path. The sweep (`sweep`) publishes
what has been left in the outbox for longer than the grace: events whose replica could not append
them (Redis failed after the commit) or died first.

Publication is at least once: an event appended whose row could not be deleted (PostgreSQL lost
just after the commit, the replica killed in between) is appended again by a sweep after the grace.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Sequence

from redis.asyncio import Redis

from schemas.events import Event
from services.db import Database
from transport.pipelined import Entry, Pipelined

log = logging.getLogger("workpools.outbox")

FORGET_LINGER_SECONDS = 0.05
"""How long published events' rows wait to be deleted with others (far below any sweep's grace)."""


class EventRelay:
    def __init__(
        self,
        db: Database,
        redis: Redis,
        stream: str,
        maxlen: int,
        batch: int = 500,
        grace_seconds: float = 5.0,
        pipelined: Pipelined | None = None,
    ) -> None:
        """`pipelined`: the replica's batcher, shared with its replies (else one of its own)."""
        self.db, self.stream, self.maxlen, self.batch, self.grace = db, stream, maxlen, batch, grace_seconds
        self._appends = pipelined or Pipelined(redis)
        self._published: list[str] = []
        self._forgetter: asyncio.Task[None] | None = None

    async def publish(self, events: Sequence[Event]) -> None:
        """Append a committed transaction's events; returns once they are in the stream. Their
        outbox rows are deleted soon after."""
        ids = [str(event.id) for event in events]
        await self._appends.append([self._entry(i, e.model_dump_json()) for i, e in zip(ids, events, strict=True)])
        self._published.extend(ids)
        if self._forgetter is None or self._forgetter.done():
            self._forgetter = asyncio.create_task(self._forget())

    async def _forget(self) -> None:
        """Delete the rows of the events published so far, after a short linger that gathers
        those of the commits meanwhile in the same statement (commits of one pool come one at a
        time: without it, a statement per commit). A failure leaves them to a sweep (published
        twice: at least once)."""
        while self._published:
            await asyncio.sleep(FORGET_LINGER_SECONDS)
            ids, self._published = self._published, []
            try:
                await self.db.forget_events(ids)
            except Exception:
                log.warning(
                    "could not delete %d published events from the outbox; a sweep will publish them again",
                    len(ids),
                    exc_info=True,
                )

    async def drain(self) -> None:
        """Wait for the deletion of the rows of events published so far (at shutdown: so that a
        sweep elsewhere does not publish them again)."""
        if self._forgetter is not None:
            await self._forgetter

    async def sweep(self) -> int:
        """Publish, in batches, the events left in the outbox for longer than the grace."""
        published = 0
        while True:
            async with self.db.take_outbox(self.batch, older_than=self.grace) as events:
                await self._appends.append([self._entry(event["id"], json.dumps(event)) for event in events])
            published += len(events)
            if len(events) < self.batch:
                return published

    def _entry(self, event_id: str, event: str) -> Entry:
        return Entry(self.stream, {"id": event_id, "event": event}, self.maxlen)
