"""Multiplexed request/reply over Redis: one reply channel per client, futures by correlation id."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from typing import Any

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

from client.errors import ServiceUnavailable
from schemas import wire
from schemas.channels import Channels, Op

log = logging.getLogger("workpools.client")


class RpcTransport:
    def __init__(self, redis_url: str, prefix: str, *, timeout: float = 30.0, maxlen: int = 10_000,
                 max_connections: int = 32) -> None:
        self.channels = Channels(prefix)
        self.timeout = timeout
        self.maxlen = maxlen
        self.reply_channel = self.channels.reply(uuid.uuid4().hex)
        # Blocking pool: many concurrent requests wait for a connection instead of failing.
        pool = BlockingConnectionPool.from_url(
            redis_url, max_connections=max_connections, timeout=timeout,
            retry=Retry(ExponentialWithJitterBackoff(0.05, 1.0), 5),
        )
        self.redis = Redis(connection_pool=pool)
        self._pending: dict[str, asyncio.Future] = {}
        self._reader: asyncio.Task | None = None
        self._subscribed = asyncio.Event()

    async def connect(self) -> None:
        self._reader = asyncio.create_task(self._read_replies())
        await asyncio.wait_for(self._subscribed.wait(), self.timeout)

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        await self.redis.aclose()

    async def _read_replies(self) -> None:
        """Dispatch replies to waiting requests; resubscribe after a lost connection."""
        while True:
            pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.reply_channel)
                self._subscribed.set()
                async for message in pubsub.listen():
                    if message["type"] == "message":
                        self._deliver(message["data"])
            except (RedisConnectionError, OSError):
                log.warning("reply channel lost; resubscribing")
                await asyncio.sleep(0.2)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()

    def _deliver(self, raw: bytes) -> None:
        try:
            body, headers = wire.decode(raw)
        except ValueError:
            log.warning("ignored a reply that is not a JSON envelope: %r", raw[:200])
            return
        future = self._pending.pop(headers.get("correlation_id", ""), None)
        if future is not None and not future.done():
            future.set_result((int(headers.get("status", 200)), body, headers))

    async def request(self, op: Op, body: Any, timeout: float | None = None) -> tuple[int, Any]:
        """Send one request and wait for its (status, body) reply."""
        status, result, _ = await self.exchange(op, body, timeout)
        return status, result

    async def exchange(self, op: Op, body: Any, timeout: float | None = None) -> tuple[int, Any, dict[str, str]]:
        """Send one request and wait for its reply: (status, body, headers)."""
        timeout = timeout or self.timeout
        correlation_id = uuid.uuid4().hex
        future = asyncio.get_running_loop().create_future()
        self._pending[correlation_id] = future
        headers = {
            "correlation_id": correlation_id,
            "reply_to": self.reply_channel,
            "deadline": f"{time.time() + timeout:.3f}",
        }
        try:
            await self.redis.xadd(
                self.channels.rpc(op),
                {wire.DATA_FIELD: wire.encode(body, headers)},
                maxlen=self.maxlen,
                approximate=True,
            )
            return await asyncio.wait_for(future, timeout)
        except asyncio.TimeoutError:
            raise ServiceUnavailable(504, f"No reply to {op} within {timeout} s.") from None
        finally:
            self._pending.pop(correlation_id, None)
