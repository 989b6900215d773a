"""Storage that would otherwise grow without bound, kept in check by every replica (whether or
not it runs the foreman): request streams trimmed by what every group has read, consumers of
replicas that are gone removed from the groups, idempotency records older than a day dropped."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from redis.asyncio import Redis

from services import idempotency
from services.db import Database

log = logging.getLogger("workpools.housekeeping")

EntryId = tuple[int, int]


def entry_id(value: bytes | str) -> EntryId:
    text = value.decode() if isinstance(value, bytes) else value
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


async def trim_floor(redis: Redis, stream: str) -> EntryId | None:
    """The oldest entry some group may still need: its oldest pending entry (read, not yet
    acknowledged) or, with none pending, the last one it read (everything after is unread).
    None when the stream has no group (nothing is known to be read: keep everything)."""
    floor: EntryId | None = None
    for group in await redis.xinfo_groups(stream):
        if group["pending"]:
            summary = await redis.xpending(stream, group["name"])
            keep = entry_id(summary["min"])
        else:
            keep = entry_id(group["last-delivered-id"])
        floor = keep if floor is None else min(floor, keep)
    return floor


async def trim_read_entries(redis: Redis, stream: str) -> int:
    """Remove the entries every group has read and acknowledged (`XTRIM MINID`): an unread or
    pending request is never removed, however long the backlog grows. Returns how many went."""
    floor = await trim_floor(redis, stream)
    if floor is None or floor == (0, 0):
        return 0
    return int(await redis.xtrim(stream, minid=f"{floor[0]}-{floor[1]}", approximate=False))


async def remove_gone_consumers(redis: Redis, stream: str, group: str, me: str, idle_seconds: float) -> list[str]:
    """`XGROUP DELCONSUMER` every consumer of `group` other than this replica that has nothing
    pending and has not read for `idle_seconds` (a live replica reads several times a second; a
    replica that comes back is added again by its next read). Returns the names removed."""
    removed = []
    for consumer in await redis.xinfo_consumers(stream, group):
        name = consumer["name"].decode() if isinstance(consumer["name"], bytes) else consumer["name"]
        idle_ms = consumer.get("inactive", consumer["idle"])
        if name != me and consumer["pending"] == 0 and idle_ms >= idle_seconds * 1000:
            await redis.xgroup_delconsumer(stream, group, name)
            removed.append(name)
    return removed


class Housekeeping:
    def __init__(
        self,
        redis: Redis,
        db: Database,
        groups: list[tuple[str, str]],
        consumer: str,
        consumer_idle_seconds: float,
        observe: Callable[..., None] = lambda what, **facts: None,
    ) -> None:
        self.redis, self.db, self.groups, self.consumer = redis, db, groups, consumer
        self.consumer_idle_seconds = consumer_idle_seconds
        self.observe = observe

    async def run(self) -> dict[str, Any]:
        """One round: trim, remove consumers that are gone, forget old request records."""
        trimmed, removed = 0, []
        for stream in dict.fromkeys(stream for stream, _ in self.groups):
            trimmed += await trim_read_entries(self.redis, stream)
        for stream, group in self.groups:
            removed += await remove_gone_consumers(self.redis, stream, group, self.consumer, self.consumer_idle_seconds)
        forgotten = await idempotency.forget_old(self.db)
        if removed:
            log.info("removed consumers of replicas that are gone: %s", ", ".join(sorted(set(removed))))
        report = {"trimmed": trimmed, "consumers_removed": len(removed), "requests_forgotten": forgotten}
        log.debug("housekeeping: %s", report)
        return report
