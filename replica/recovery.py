"""Requests and ready marks that a replica left pending when it died are taken over; stale
requests are dropped; messages that keep failing go to a dead-letter stream; writes run once.

A replica keeps the requests it is still handling fresh (`InFlight`), so a slow request is never
taken for one whose replica died. A write runs once per request id: the client's `request_id`
header, or, for a client that sends none, the stream entry the request first arrived as (the
reclaimer carries it along when it appends the entry again).
"""

from __future__ import annotations

import json
import logging
import time
from collections import defaultdict
from typing import Any

from faststream import BaseMiddleware
from faststream.exceptions import AckMessage
from redis.asyncio import Redis

from schemas import wire
from schemas.channels import Op
from services import requests
from services.db import Database
from transport.envelope import respond

log = logging.getLogger("workpools.recovery")


class DropExpired(BaseMiddleware):
    """A request whose caller has given up (`deadline` header passed) is acknowledged unexecuted."""

    async def consume_scope(self, call_next: Any, msg: Any) -> Any:
        deadline = msg.headers.get("deadline")
        try:
            expired = deadline is not None and float(deadline) < time.time()
        except ValueError:
            expired = False
        if expired:
            log.info("dropped an expired request %s", msg.correlation_id)
            raise AckMessage()  # acknowledged, and no reply: its caller has stopped waiting
        return await call_next(msg)


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
        dead_maxlen: int = 10_000,
    ) -> None:
        self.redis, self.groups, self.consumer, self.dead = redis, groups, f"{consumer}-reclaim", dead
        self.idle_ms, self.max_deliveries, self.dead_maxlen = int(idle * 1000), max_deliveries, dead_maxlen

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
            headers.setdefault("request_id", first_entry_id(stream, entry_id))
            pipe.xadd(stream, {wire.DATA_FIELD: json.dumps(envelope)}, maxlen=self.dead_maxlen * 10, approximate=True)
        pipe.xack(stream, group, entry_id)
        pipe.xdel(stream, entry_id)
        await pipe.execute()


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


def first_entry_id(stream: str, entry_id: bytes | str) -> str:
    """The request id of a request sent without one: the stream entry it first arrived as."""
    return f"{stream}/{entry_id.decode() if isinstance(entry_id, bytes) else entry_id}"


WRITE_OPS = frozenset(
    {
        Op.CREATE_WORK_POOL,
        Op.UPDATE_WORK_POOL,
        Op.DELETE_WORK_POOL,
        Op.CREATE_WORK_QUEUE,
        Op.UPDATE_WORK_QUEUE,
        Op.DELETE_WORK_QUEUE,
        Op.DELETE_WORKER,
        Op.CREATE_DEPLOYMENT,
        Op.CREATE_FLOW_RUN,
        Op.SET_FLOW_RUN_STATE,
    }
)
"""Operations whose repeat must not act twice (heartbeats and reads are harmless to repeat)."""


class ExactlyOnce(BaseMiddleware):
    """A write runs once per request id; every repeat gets the first reply."""

    db: Database

    async def consume_scope(self, call_next: Any, msg: Any) -> Any:
        stream = str(msg.raw_message.get("channel", ""))
        op = stream.rsplit(".", 1)[-1]
        if op not in WRITE_OPS:
            return await call_next(msg)
        request_id = msg.headers.get("request_id") or first_entry_id(stream, msg.raw_message["message_ids"][0])
        try:
            async with requests.once(self.db, request_id, op) as record:
                response = await call_next(msg)
                record(int(response.headers.get("status", 200)), response.body)
                return response
        except requests.Replayed as replayed:
            log.info("request %s (%s) already ran; answering its reply again", request_id, op)
            return respond(replayed.status, replayed.reply)


def exactly_once(db: Database) -> type[ExactlyOnce]:
    return type("ExactlyOnceFor", (ExactlyOnce,), {"db": db})
