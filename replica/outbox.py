"""Publishes committed events from the outbox table to the `{prefix}.events` stream."""

from __future__ import annotations

import asyncio
import json
import logging

from redis.asyncio import Redis

from services.db import Database, Kind

log = logging.getLogger("workpools.outbox")


class EventRelay:
    """Moves events outbox -> stream. Each removal is rolled back if the XADDs fail, so an
    event is published at least once; a replica that died mid-way leaves them to the sweep."""

    def __init__(self, db: Database, redis: Redis, stream: str, maxlen: int, batch: int = 500) -> None:
        self.db, self.redis, self.stream, self.maxlen, self.batch = db, redis, stream, maxlen, batch
        self._one_at_a_time = asyncio.Lock()
        self._asked = 0  # flushes asked for (one per commit with events)
        self._covered = 0  # asks that a finished flush covered (it started after they were made)

    async def flush_committed(self) -> None:
        """Publish the events of a transaction that has just committed; return once they are
        published. Concurrent commits share flushes: one flush runs at a time, and a commit
        whose events a flush started after it has taken does not run another (a flush is a
        database transaction and a Redis round trip; at 32 concurrent creates, most found
        nothing left to take)."""
        self._asked += 1
        mine = self._asked
        async with self._one_at_a_time:
            if self._covered >= mine:
                return
            asked = self._asked
            await self.flush()
            self._covered = asked

    async def sweep(self) -> int:
        """The periodic sweep: a flush that takes its turn with the flushes after commits. A sweep
        running beside them would take (SKIP LOCKED) the rows of a commit whose own flush then
        finds nothing and returns before those events are published: the commit's reply could
        then go out before its events, and the caller's next change be published ahead of them."""
        async with self._one_at_a_time:
            return await self.flush(Kind.BACKGROUND)

    async def flush(self, kind: Kind = Kind.REQUEST) -> int:
        """Publish what the outbox holds, in batches: after a commit, on the request's
        connections and timeouts; for the sweep, on background work's."""
        published = 0
        while True:
            async with self.db.take_outbox(self.batch, kind) as events:
                if events:
                    pipe = self.redis.pipeline(transaction=False)
                    for event in events:
                        pipe.xadd(
                            self.stream,
                            {"id": event["id"], "event": json.dumps(event)},
                            maxlen=self.maxlen,
                            approximate=True,
                        )
                    await pipe.execute()
            published += len(events)
            if len(events) < self.batch:
                return published
