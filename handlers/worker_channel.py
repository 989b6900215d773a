"""The worker channel on Redis pub/sub: one effect per message, and heartbeats in batches.

Pub/sub delivers every message to every replica. Each replica marks the message's id as seen in
Redis (`SET NX`, in one script call per batch): only the replica that marks it first acts, so a
message published once has one effect however many replicas run. The mark lives twice the
message lifetime and a message older than its lifetime is refused, so a delivery however late
never acts a second time (docs/worker-channel.md).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic_core import PydanticSerializationError
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from handlers.errors import as_error
from schemas.channels import Channels
from schemas.wire import ErrorKind
from schemas.worker_channel import MESSAGE_LIFETIME_SECONDS, HeartbeatMessage, WorkerMessage, WorkerReply
from services.db import Database
from services.errors import Invalid, Unavailable, pool_not_found
from services.heartbeats import Beat, record_heartbeats

log = logging.getLogger("workpools.workers")

MARK_FIRST = """
local first = {}
for i, key in ipairs(KEYS) do
  if redis.call('set', key, '1', 'NX', 'PX', ARGV[1]) then first[#first + 1] = i end
end
return first
"""


class SeenMessages:
    """Which replica acts on a worker message: the first to mark its id as seen. A mark lasts
    twice the message lifetime, so any delivery that is still fresh finds it."""

    def __init__(self, redis: Redis, channels: Channels, lifetime_seconds: float = MESSAGE_LIFETIME_SECONDS) -> None:
        self.channels, self.lifetime = channels, lifetime_seconds
        self.ttl_ms = int(2 * lifetime_seconds * 1000)
        self._mark = redis.register_script(MARK_FIRST)

    async def first(self, keys: list[str]) -> list[int]:
        """Indexes of the message keys this replica marked first."""
        if not keys:
            return []
        names = [self.channels.seen(key) for key in keys]
        return [index - 1 for index in await self._mark(keys=names, args=[self.ttl_ms])]


def message_key(kind: str, raw: bytes, message: WorkerMessage | None, message_id: str | None = None) -> str:
    """A message is known by its id (its kind's namespace), else by a hash of its bytes."""
    ident = (message.message_id if message is not None else None) or message_id
    if ident is None:
        return hashlib.blake2b(raw, digest_size=12).hexdigest()
    return f"{kind}." + hashlib.blake2b(ident.encode(), digest_size=12).hexdigest()


def staleness(message: WorkerMessage, now: float, lifetime: float = MESSAGE_LIFETIME_SECONDS) -> str | None:
    """Why a message may not act (sent too long ago, or too far ahead of this replica's clock)."""
    if message.sent_at is None:
        return None
    age = now - message.sent_at
    if abs(age) <= lifetime:
        return None
    return f"Message sent {age:.1f} s ago (clocks included): older than {lifetime:.0f} s, refused."


def sent_time(received: datetime, received_unix: float, sent_at: float) -> datetime:
    """When a heartbeat was sent, on the replica's clock: its receipt moved back by how long it
    took to arrive (by the sender's `sent_at`; a sender ahead of this clock counts as no delay).
    The leases it renews run from here, so a heartbeat that arrived or was written late renews
    no further than it would have on time (`services.leases`)."""
    return received - timedelta(seconds=max(0.0, received_unix - sent_at))


def plain(value: Any) -> Any:
    """JSON data for `value`, field by field where pydantic's encoder gives up (too deep)."""
    if isinstance(value, list):
        return [plain(item) for item in value]
    if not isinstance(value, BaseModel):
        return value
    try:
        return value.model_dump(mode="json")
    except (PydanticSerializationError, ValueError, RecursionError):
        nested = {name for name, field in value if isinstance(field, (BaseModel, dict, list))}
        return value.model_dump(mode="json", exclude=nested) | {name: plain(getattr(value, name)) for name in nested}


def reply_body(
    correlation_id: str, status: int, *, result: Any = None, detail: Any = None, error: ErrorKind | None = None
) -> str:
    """A reply as JSON. Pydantic's encoder stops at a nesting depth of about 250; data nested
    deeper (a run's `parameters`, stored and read back as JSON) is encoded by the standard
    library's encoder, which goes as deep as the decoders that accepted it."""
    try:
        reply = WorkerReply(correlation_id=correlation_id, status=status, result=result, detail=detail, error=error)
        return reply.model_dump_json()
    except (PydanticSerializationError, ValueError, RecursionError):
        body = {"correlation_id": correlation_id, "status": status, "result": plain(result), "detail": detail}
        return json.dumps(body | ({"error": error} if error else {}), default=str)


def error_body(correlation_id: str, exc: Exception) -> str:
    """An error's reply (mapped by the one error table): its status, its kind and its detail."""
    error = as_error(exc)
    return reply_body(correlation_id, error.status, detail=error.detail, error=error.kind)


class ReplyNamespace:
    """Where the worker channel answers: only inside the reply namespace of the Redis user whose
    worker channel a message came in on (`Channels.answers_worker_on`). Only that user may
    publish on its worker channels and read its reply namespace, so no worker can have an answer
    delivered onto another user's channel. A message naming any other `reply_to` gets no answer
    anywhere; it is logged (WARNING) and counted in `refused`."""

    def __init__(self, channels: Channels) -> None:
        self.channels = channels
        self.refused = 0

    def allows(self, kind: str, reply_to: str, user: str | None, outcome: str) -> bool:
        if self.channels.answers_worker_on(reply_to, user):
            return True
        self.refused += 1
        inside = " or ".join(f"{start}*" for start in self.channels.worker_reply_namespace(user))
        log.warning(
            "refused to answer a %s on %r: outside %s, the reply namespace of %s (%s, no answer)",
            kind,
            reply_to[:200],
            inside,
            f"Redis user {user!r}" if user else "the shared worker channel",
            outcome,
        )
        return False


def channel_user(channels: Channels, channel: bytes | str | None) -> str | None:
    """The Redis user whose worker channel a pub/sub message came in on (None: a shared one)."""
    if channel is None:
        return None
    return channels.worker_channel_user(channel.decode() if isinstance(channel, bytes) else channel)


def address(raw: bytes) -> tuple[str, str, str | None] | None:
    """(reply_to, correlation_id, message_id) of a message that names where to answer, read from
    its JSON when the message itself is invalid; None when it names no address."""
    try:
        message = json.loads(raw)
        reply_to, correlation_id = message["reply_to"], str(message["correlation_id"])
    except (ValueError, KeyError, TypeError, RecursionError):  # not JSON, no address, nested too deep
        return None
    if not isinstance(reply_to, str):
        return None
    message_id = message.get("message_id")
    return reply_to, correlation_id, message_id if isinstance(message_id, str) else None


async def answered(
    redis: Redis, reply_to: str, correlation_id: str, work: Callable[[], Awaitable[tuple[int, Any]]]
) -> None:
    """Run `work` (-> status, result) and publish its answer; any failure, the encoding of the
    result included, is answered through the one error table."""
    try:
        status, result = await work()
        body = reply_body(correlation_id, status, result=result)
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        body = error_body(correlation_id, exc)
    await redis.publish(reply_to, body)


class HeartbeatIngest:
    """Collects heartbeats from pub/sub (the shared channel and every user's) and records each
    batch. The buffer is bounded: beyond `max_buffer` heartbeats waiting, new ones are shed,
    counted and logged (a worker's next beat replaces a shed one). A heartbeat whose `reply_to`
    lies outside its user's reply namespace is recorded as a fire-and-forget one (what its sender
    could publish anyway) and not answered (`namespace.refused`)."""

    def __init__(
        self,
        redis: Redis,
        channels: Channels,
        db: Database,
        seen: SeenMessages,
        flush_seconds: float = 0.2,
        max_batch: int = 5000,
        max_buffer: int = 50_000,
        tolerance: Callable[[int | None], float] = lambda interval: 3.0 * (interval or 30),
    ) -> None:
        self.redis, self.channels, self.db, self.seen = redis, channels, db, seen
        self.flush_seconds, self.max_batch, self.max_buffer = flush_seconds, max_batch, max_buffer
        self.tolerance = tolerance
        self.max_message_bytes = 65_536  # a heartbeat is ~200 bytes; larger ones are dropped
        self.shed = 0
        """Heartbeats dropped because the buffer was full."""
        self.refused = 0
        """Heartbeats refused for being older than their lifetime."""
        self.namespace = ReplyNamespace(channels)
        self._buffer: list[tuple[datetime, float, bytes, str | None]] = []
        self._full = asyncio.Event()
        self._shed_logged = 0.0

    async def run(self, stopping: asyncio.Event) -> None:
        reader = asyncio.create_task(self._read())
        try:
            while not stopping.is_set():
                try:
                    await asyncio.wait_for(self._full.wait(), self.flush_seconds)
                except TimeoutError:
                    pass
                self._full.clear()
                while self._buffer and not stopping.is_set():
                    batch, self._buffer = self._buffer[: self.max_batch], self._buffer[self.max_batch :]
                    try:
                        await self.flush(batch)
                    except Exception:
                        log.warning("could not record %d heartbeats", len(batch), exc_info=True)
        finally:
            reader.cancel()
            await asyncio.wait([reader], timeout=2)

    def received(self, raw: bytes, user: str | None = None) -> None:
        if len(raw) > self.max_message_bytes:
            return
        if len(self._buffer) >= self.max_buffer:
            self.shed += 1
            now = time.monotonic()
            if now - self._shed_logged > 5:
                self._shed_logged = now
                log.warning("heartbeat buffer full (%d): %d heartbeats shed so far", self.max_buffer, self.shed)
            return
        self._buffer.append((self.db.clock(), time.time(), raw, user))
        if len(self._buffer) >= self.max_batch:
            self._full.set()

    async def _read(self) -> None:
        while True:
            pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.channels.worker_heartbeats)
                await pubsub.psubscribe(self.channels.users_worker_heartbeats)
                async for message in pubsub.listen():
                    if message["type"] in ("message", "pmessage"):
                        self.received(message["data"], channel_user(self.channels, message["channel"]))
            except (RedisConnectionError, OSError) as exc:
                log.warning("heartbeat channel lost (%s); resubscribing", exc)
                await asyncio.sleep(0.5)
            finally:
                await asyncio.shield(pubsub.aclose())

    async def flush(self, batch: list[tuple[datetime, float, bytes, str | None]]) -> int:
        """Record the heartbeats this replica sees first (each dated when it was sent, by
        `sent_time`, or else when it was received); returns how many workers it recorded."""
        parsed: list[tuple[datetime, bytes, HeartbeatMessage | ValidationError, str | None]] = []
        keys: list[str] = []
        for received, received_unix, raw, user in batch:
            try:
                message: HeartbeatMessage | ValidationError = HeartbeatMessage.model_validate_json(raw)
            except ValidationError as exc:
                message = exc
            if isinstance(message, HeartbeatMessage) and message.sent_at is not None:
                received = sent_time(received, received_unix, message.sent_at)
            parsed.append((received, raw, message, user))
            keys.append(message_key("beat", raw, message if isinstance(message, HeartbeatMessage) else None))
        now = time.time()
        latest: dict[tuple[str, str], Beat] = {}
        asks: list[HeartbeatMessage] = []
        replies: list[tuple[str, str]] = []
        for index in await self.seen.first(keys):
            received, raw, message, user = parsed[index]
            if isinstance(message, ValidationError):
                where = address(raw)
                if where is not None and self.namespace.allows("heartbeat", where[0], user, "invalid"):
                    replies.append((where[0], error_body(where[1], message)))
                continue
            stale = staleness(message, now, self.seen.lifetime)
            reply_to, correlation_id = message.reply_to, message.correlation_id
            if reply_to and correlation_id:
                if not self.namespace.allows("heartbeat", reply_to, user, "refused" if stale else "recorded"):
                    reply_to = None
            if stale is not None:
                self.refused += 1
                log.info("refused a heartbeat of %s: %s", message.worker_name, stale)
                if reply_to and correlation_id:
                    replies.append((reply_to, error_body(correlation_id, Invalid(stale))))
                continue
            key = (message.work_pool_name, message.worker_name)
            interval = message.heartbeat_interval_seconds
            earlier = latest.get(key)
            if interval is None and earlier is not None:
                interval = earlier.heartbeat_interval_seconds
            tokens = message.lease_tokens
            if earlier is not None and earlier.lease_tokens is not None and tokens is None:
                tokens = earlier.lease_tokens
            latest[key] = Beat(
                message.work_pool_name,
                message.worker_name,
                interval,
                received,
                tuple(tokens) if tokens is not None else None,
                self.tolerance(interval),
            )
            if reply_to and correlation_id:
                asks.append(message)
        recorded, failed = await self._record(list(latest.values())) if latest else ({}, {})
        for beat in asks:
            if (exc := failed.get(beat.work_pool_name)) is not None:
                replies.append((beat.reply_to, error_body(beat.correlation_id, exc)))
            elif beat.work_pool_name not in recorded:
                replies.append((beat.reply_to, error_body(beat.correlation_id, pool_not_found(beat.work_pool_name))))
            elif beat.lease_tokens is None:
                replies.append((beat.reply_to, reply_body(beat.correlation_id, 204)))
            else:
                renewed = recorded[beat.work_pool_name].get(beat.worker_name, [])
                replies.append((beat.reply_to, reply_body(beat.correlation_id, 200, result={"leases": renewed})))
        if replies:
            pipe = self.redis.pipeline(transaction=False)
            for channel, body in replies:
                pipe.publish(channel, body)
            await pipe.execute()
        return sum(len(workers) for workers in recorded.values())

    async def _record(
        self, beats: list[Beat]
    ) -> tuple[dict[str, dict[str, list[dict[str, Any]]]], dict[str, Exception]]:
        """Write a batch pool by pool (one locked pool stalls only its own workers); a deadlock
        or serialization failure (503) is retried. Returns, per recorded pool, the renewed
        leases of each worker, and per pool that failed, why."""
        by_pool: dict[str, list[Beat]] = {}
        for beat in beats:
            by_pool.setdefault(beat.work_pool_name, []).append(beat)
        outcomes = await asyncio.gather(*(self._record_pool(pool_beats) for pool_beats in by_pool.values()))
        recorded: dict[str, dict[str, list[dict[str, Any]]]] = {}
        failed: dict[str, Exception] = {}
        for name, outcome in zip(by_pool, outcomes, strict=True):
            if isinstance(outcome, Exception):
                failed[name] = outcome
            elif outcome is not None:
                recorded[name] = outcome
        return recorded, failed

    async def _record_pool(
        self, beats: list[Beat], attempts: int = 3
    ) -> dict[str, list[dict[str, Any]]] | None | Exception:
        for attempt in range(attempts):
            try:
                renewed = await record_heartbeats(self.db, beats)
            except Unavailable as exc:
                if attempt == attempts - 1:
                    log.warning("could not record %d heartbeats of %s (%s)", len(beats), beats[0].work_pool_name, exc)
                    return exc
                await asyncio.sleep(0.05 * 2**attempt)
            except Exception as exc:
                log.warning("could not record %d heartbeats of %s", len(beats), beats[0].work_pool_name, exc_info=True)
                return exc
            else:
                if renewed is None:
                    return None
                return {
                    worker: [{"token": token, "seconds_left": left} for token, left in sorted(leases.items())]
                    for worker, leases in renewed.items()
                }
        return None
