"""The requests a replica is handling stay fresh, so no reclaimer takes a slow one for one
whose replica died."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from faststream import BaseMiddleware
from redis.asyncio import Redis


class InFlight:
    """The entries this replica is handling, by stream. `touch()` resets their idle time
    (XCLAIM to itself, JUSTID: the delivery count stays), so no reclaimer takes them while the
    replica is alive and at work, however long a request takes."""

    def __init__(self, redis: Redis, group: str, consumer: str) -> None:
        self.redis, self.group, self.consumer = redis, group, consumer
        self.entries: defaultdict[str, set[bytes]] = defaultdict(set)

    async def touch(self) -> None:
        for stream, ids in list(self.entries.items()):
            if ids:
                await self.redis.xclaim(stream, self.group, self.consumer, 0, list(ids), justid=True)

    def middleware(self) -> type[BaseMiddleware]:
        return type("InFlightOf", (TrackInFlight,), {"in_flight": self})


class TrackInFlight(BaseMiddleware):
    in_flight: InFlight

    async def consume_scope(self, call_next: Any, msg: Any) -> Any:
        entries = self.in_flight.entries[msg.raw_message["channel"]]
        ids = msg.raw_message["message_ids"]
        entries.update(ids)
        try:
            return await call_next(msg)
        finally:
            entries.difference_update(ids)
