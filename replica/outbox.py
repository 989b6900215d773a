"""Publishes committed events from the outbox table to the `{prefix}.events` stream."""

from __future__ import annotations

import json
import logging

from redis.asyncio import Redis

from services.db import Database

log = logging.getLogger("workpools.outbox")


class EventRelay:
    """Moves events outbox -> stream. Each removal is rolled back if the XADDs fail, so an
    event is published at least once; a replica that died mid-way leaves them to the sweep."""

    def __init__(self, db: Database, redis: Redis, stream: str, maxlen: int, batch: int = 500) -> None:
        self.db, self.redis, self.stream, self.maxlen, self.batch = db, redis, stream, maxlen, batch

    async def flush(self) -> int:
        published = 0
        while True:
            async with self.db.take_outbox(self.batch) as events:
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
