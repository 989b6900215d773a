"""The worker channel on Redis pub/sub: claims shared by the replicas, and heartbeats in batches.

Pub/sub delivers every message to every replica. Each replica hashes the raw message and
claims the hash in Redis (`SET NX`, in one script call per batch): only the replica that claims
it first acts, so a message published once has one effect however many replicas run.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from schemas.channels import Channels
from schemas.worker_channel import HeartbeatMessage, WorkerReply
from services.db import Database
from services.errors import Invalid, Unavailable, WorkPoolsError, internal_error, pool_not_found
from services.heartbeats import Beat, record_heartbeats

log = logging.getLogger("workpools.workers")

CLAIM = """
local won = {}
for i, key in ipairs(KEYS) do
  if redis.call('set', key, '1', 'NX', 'PX', ARGV[1]) then won[#won + 1] = i end
end
return won
"""


class Claims:
    """Which replica acts on a message: the first to claim its hash."""

    def __init__(self, redis: Redis, channels: Channels, ttl_seconds: float = 10.0) -> None:
        self.channels, self.ttl_ms = channels, int(ttl_seconds * 1000)
        self._claim = redis.register_script(CLAIM)

    async def won(self, raw_messages: list[bytes]) -> list[int]:
        """Indexes of the messages this replica claimed first."""
        if not raw_messages:
            return []
        keys = [self.channels.seen(hashlib.blake2b(raw, digest_size=12).hexdigest()) for raw in raw_messages]
        return [index - 1 for index in await self._claim(keys=keys, args=[self.ttl_ms])]


def reply_body(correlation_id: str, status: int, *, result: Any = None) -> str:
    return WorkerReply(correlation_id=correlation_id, status=status, result=result).model_dump_json()


def error_body(correlation_id: str, error: WorkPoolsError) -> str:
    """An error's reply: its status, its kind and its detail."""
    return WorkerReply(
        correlation_id=correlation_id, status=error.status, detail=error.detail, error=error.kind
    ).model_dump_json()


def invalid_reply(raw: bytes, exc: ValidationError) -> tuple[str, str] | None:
    """(reply_to, 422 reply) for a message that names where to answer; None otherwise."""
    try:
        message = json.loads(raw)
        reply_to, correlation_id = message["reply_to"], str(message["correlation_id"])
    except (ValueError, KeyError, TypeError, RecursionError):  # not JSON, no address, nested too deep
        return None
    if not isinstance(reply_to, str):
        return None
    return reply_to, error_body(correlation_id, Invalid(json.loads(exc.json(include_url=False))))


class HeartbeatIngest:
    """Collects heartbeats from pub/sub and records each batch with one upsert."""

    def __init__(
        self,
        redis: Redis,
        channels: Channels,
        db: Database,
        claims: Claims,
        flush_seconds: float = 0.2,
        max_batch: int = 5000,
    ) -> None:
        self.redis, self.channels, self.db, self.claims = redis, channels, db, claims
        self.flush_seconds, self.max_batch = flush_seconds, max_batch
        self.max_message_bytes = 65_536  # a heartbeat is ~200 bytes; larger ones are dropped
        self._buffer: list[tuple[float, bytes]] = []
        self._full = asyncio.Event()

    async def run(self, stopping: asyncio.Event) -> None:
        reader = asyncio.create_task(self._read())
        try:
            while not stopping.is_set():
                try:
                    await asyncio.wait_for(self._full.wait(), self.flush_seconds)
                except TimeoutError:
                    pass
                self._full.clear()
                batch, self._buffer = self._buffer, []
                if batch:
                    try:
                        await self.flush(batch)
                    except Exception:
                        log.warning("could not record %d heartbeats", len(batch), exc_info=True)
        finally:
            reader.cancel()
            await asyncio.wait([reader], timeout=2)

    async def _read(self) -> None:
        while True:
            pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.channels.worker_heartbeats)
                async for message in pubsub.listen():
                    if message["type"] == "message" and len(message["data"]) <= self.max_message_bytes:
                        self._buffer.append((time.time(), message["data"]))
                        if len(self._buffer) >= self.max_batch:
                            self._full.set()
            except (RedisConnectionError, OSError) as exc:
                log.warning("heartbeat channel lost (%s); resubscribing", exc)
                await asyncio.sleep(0.5)
            finally:
                await asyncio.shield(pubsub.aclose())

    async def flush(self, batch: list[tuple[float, bytes]]) -> int:
        """Record the heartbeats this replica claimed (each stamped with when it was received);
        returns how many workers it recorded."""
        latest: dict[tuple[str, str], Beat] = {}
        asks: list[HeartbeatMessage] = []
        replies: list[tuple[str, str]] = []
        for index in await self.claims.won([raw for _, raw in batch]):
            received, raw = batch[index]
            try:
                message = HeartbeatMessage.model_validate_json(raw)
            except ValidationError as exc:
                if (answer := invalid_reply(raw, exc)) is not None:
                    replies.append(answer)
                continue
            key = (message.work_pool_name, message.worker_name)
            interval = message.heartbeat_interval_seconds
            if interval is None and key in latest:
                interval = latest[key].heartbeat_interval_seconds
            seen = datetime.fromtimestamp(received, UTC)
            latest[key] = Beat(message.work_pool_name, message.worker_name, interval, seen)
            if message.reply_to and message.correlation_id:
                asks.append(message)
        unknown, failed = set(), None
        if latest:
            beats = list(latest.values())
            try:
                unknown = await self._record(beats)
            except Exception as exc:
                failed = exc if isinstance(exc, WorkPoolsError) else internal_error()
                log.warning(
                    "could not record %d heartbeats (%s)", len(beats), failed.detail, exc_info=failed is not exc
                )
        for beat in asks:
            if failed is not None:
                replies.append((beat.reply_to, error_body(beat.correlation_id, failed)))
            elif beat.work_pool_name in unknown:
                replies.append((beat.reply_to, error_body(beat.correlation_id, pool_not_found(beat.work_pool_name))))
            else:
                replies.append((beat.reply_to, reply_body(beat.correlation_id, 204)))
        if replies:
            pipe = self.redis.pipeline(transaction=False)
            for channel, body in replies:
                pipe.publish(channel, body)
            await pipe.execute()
        return 0 if failed else len(latest)

    async def _record(self, beats: list[Beat], attempts: int = 3) -> set[str]:
        """Write a batch; a deadlock or serialization failure (503) is retried, not dropped."""
        for attempt in range(attempts):
            try:
                return await record_heartbeats(self.db, beats)
            except Unavailable:
                if attempt == attempts - 1:
                    raise
                await asyncio.sleep(0.05 * 2**attempt)
        return set()
