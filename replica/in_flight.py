"""The requests a replica holds stay fresh, so no reclaimer takes one from a live replica.

A replica holds more than the requests it is handling: FastStream reads up to `max_records`
entries per XREADGROUP and keeps those its handlers cannot start yet in memory until a slot
frees. So freshness is kept for every entry this replica's consumer has read and not yet
acknowledged (its pending entries list), not only for those being handled.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

from redis.asyncio import Redis

from replica.expired_requests import entry_seconds

log = logging.getLogger("workpools")


class InFlight:
    """`touch()` resets the idle time of every entry this replica's consumer holds in `streams`
    (XCLAIM to itself, JUSTID: the delivery count stays), so no reclaimer takes them while the
    replica is alive — whether a handler works on them or they wait for one — for at most
    `max_age` seconds after the entry was appended (its id's time): a request that outlives that
    (the request timeout did not end it) is logged and left to the reclaimers, and after
    `max_deliveries` to the dead letters, instead of being kept fresh forever."""

    def __init__(
        self,
        redis: Redis,
        group: str,
        consumer: str,
        streams: Sequence[str],
        idle_seconds: float = 0.0,
        max_age: float = float("inf"),
    ) -> None:
        self.redis, self.group, self.consumer, self.streams = redis, group, consumer, list(streams)
        self.idle_ms = int(idle_seconds * 1000)
        """Only entries idle at least this long are touched (the others are fresh already)."""
        self.max_age = max_age
        self.given_up: set[bytes] = set()
        """Entries too old to keep fresh, already logged."""

    async def held(self) -> dict[str, list[bytes]]:
        """The entries this consumer holds, by stream (idle for at least `idle_ms`)."""
        pipe = self.redis.pipeline(transaction=False)
        for stream in self.streams:
            pipe.xpending_range(
                stream, self.group, min="-", max="+", count=10_000, consumername=self.consumer, idle=self.idle_ms
            )
        held: dict[str, list[bytes]] = {}
        oldest = time.time() - self.max_age
        too_old: set[bytes] = set()
        for stream, pending in zip(self.streams, await pipe.execute(raise_on_error=False), strict=True):
            if isinstance(pending, list) and pending:
                ids = [entry["message_id"] for entry in pending]
                fresh = [entry for entry in ids if (entry_seconds(entry) or 0.0) >= oldest]
                too_old.update(entry for entry in ids if entry not in fresh)
                if fresh:
                    held[stream] = fresh
        for entry in too_old - self.given_up:
            log.error("request entry %s held longer than %g s: no longer kept fresh", entry.decode(), self.max_age)
        self.given_up = too_old
        return held

    async def touch(self) -> None:
        held = await self.held()
        if not held:
            return
        pipe = self.redis.pipeline(transaction=False)
        for stream, ids in held.items():
            pipe.xclaim(stream, self.group, self.consumer, 0, ids, justid=True)
        await pipe.execute(raise_on_error=False)
