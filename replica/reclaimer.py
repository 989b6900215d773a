"""Requests and ready marks that a replica left pending when it died are taken over; messages
that keep failing go to a dead-letter stream.

A request the reclaimer appends again keeps its identity: when its client sent no `request_id`,
the entry it first arrived as becomes its request id, so a write that did commit is not done
again (`handlers.idempotency`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable

from redis.asyncio import Redis

from replica.expired_requests import entry_seconds
from schemas import wire

log = logging.getLogger("workpools.reclaim")


class Reclaimer:
    """Takes entries idle for `idle` seconds in each (stream, group) and
    appends them again (their `deliveries` header counted up) for any live replica to serve;
    past `max_deliveries` an entry goes to the dead-letter stream with the reason."""

    def __init__(
        self,
        redis: Redis,
        groups: list[tuple[str, str]],
        consumer: str,
        dead: str,
        *,
        idle: float,
        max_deliveries: int,
        maxlen: int | None,
        dead_maxlen: int = 10_000,
        observe: Callable[..., None] | None = None,
    ) -> None:
        self.redis, self.groups, self.consumer, self.dead = redis, groups, f"{consumer}-reclaim", dead
        self.idle_ms, self.max_deliveries = int(idle * 1000), max_deliveries
        self.maxlen, self.dead_maxlen = maxlen, dead_maxlen
        self.observe = observe or (lambda what, **facts: None)
        """Told of each entry handed on (`recovered`, outcome reclaimed or dead_lettered): metrics."""

    async def reclaim_all(self) -> int:
        return sum([await self.reclaim(stream, group) for stream, group in self.groups])

    async def reclaim(self, stream: str, group: str) -> int:
        moved, start = 0, "0-0"
        while True:
            next_start, entries, *_ = await self.redis.xautoclaim(
                stream, group, self.consumer, self.idle_ms, start_id=start, count=100
            )
            for entry_id, fields in entries:
                await self._requeue(stream, group, entry_id, fields)
                moved += 1
            if next_start in (b"0-0", "0-0"):
                return moved
            start = next_start

    async def _requeue(self, stream: str, group: str, entry_id: bytes, fields: dict) -> None:
        raw = fields.get(wire.DATA_FIELD.encode()) or b""
        try:
            envelope = json.loads(raw)
            headers = envelope.setdefault("headers", {})
            deliveries = int(headers.get("deliveries", "1")) + 1
        except (ValueError, TypeError, AttributeError):
            envelope, deliveries = None, self.max_deliveries + 1
        pipe = self.redis.pipeline(transaction=True)
        if envelope is None or deliveries > self.max_deliveries:
            reason = "unreadable entry" if envelope is None else f"not answered after {deliveries - 1} deliveries"
            log.warning("dead-lettering %s %s: %s", stream, entry_id, reason)
            pipe.xadd(
                self.dead,
                {"stream": stream, "entry_id": entry_id, "reason": reason, wire.DATA_FIELD: raw},
                maxlen=self.dead_maxlen,
                approximate=True,
            )
        else:
            headers["deliveries"] = str(deliveries)
            headers.setdefault("request_id", wire.entry_request_id(stream, entry_id))
            entered = entry_seconds(entry_id)
            if entered is not None:  # the request's timeout keeps counting from its first entry
                headers.setdefault(wire.ENTERED_HEADER, f"{entered:.3f}")
            pipe.xadd(stream, {wire.DATA_FIELD: json.dumps(envelope)}, maxlen=self.maxlen, approximate=True)
        pipe.xack(stream, group, entry_id)
        pipe.xdel(stream, entry_id)
        await pipe.execute()
        dead = envelope is None or deliveries > self.max_deliveries
        self.observe("recovered", outcome="dead_lettered" if dead else "reclaimed")
