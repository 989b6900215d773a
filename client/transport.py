"""Multiplexed request/reply over Redis: one reply channel per client, futures by correlation id."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import AuthenticationError, NoPermissionError
from redis.exceptions import ConnectionError as RedisConnectionError

from client.errors import ServiceUnavailable
from schemas import wire
from schemas.channels import REQUEST_STREAM_MAXLEN, Channels, Op

log = logging.getLogger("workpools.client")

Decode = Callable[[bytes], tuple[str, Any]]
"""Raw reply -> (correlation id, what the waiting request gets)."""

REFUSALS = (AuthenticationError, NoPermissionError)
"""Redis refused the client's user (wrong credentials, or an ACL right missing): raised as they are."""


def connect_redis(redis_url: str, max_connections: int, timeout: float) -> Redis:
    # Blocking pool: many concurrent requests wait for a connection instead of failing.
    pool = BlockingConnectionPool.from_url(
        redis_url,
        max_connections=max_connections,
        timeout=timeout,
        retry=Retry(ExponentialWithJitterBackoff(0.05, 1.0), 5),
    )
    return Redis(connection_pool=pool)


class ReplyChannel:
    """One pub/sub subscription that routes every reply to the request waiting for it."""

    def __init__(self, redis: Redis, channel: str, decode: Decode, timeout: float) -> None:
        self.redis, self.channel, self.decode, self.timeout = redis, channel, decode, timeout
        self._pending: dict[str, asyncio.Future] = {}
        self._reader: asyncio.Task | None = None
        self._subscribed = asyncio.Event()

    async def open(self) -> None:
        self._reader = asyncio.create_task(self._read())
        subscribed = asyncio.create_task(self._subscribed.wait())
        await asyncio.wait({self._reader, subscribed}, timeout=self.timeout, return_when=asyncio.FIRST_COMPLETED)
        subscribed.cancel()
        if self._subscribed.is_set():
            return
        reader, self._reader = self._reader, None
        if reader.done():
            reader.result()  # Redis refused this client (credentials, ACL rights): raise that, clearly
        await _cancel(reader)
        raise ServiceUnavailable(503, "Redis is not reachable.")

    async def close(self) -> None:
        if self._reader is not None:
            await _cancel(self._reader)
            self._reader = None

    def expect(self, correlation_id: str) -> asyncio.Future:
        future = asyncio.get_running_loop().create_future()
        self._pending[correlation_id] = future
        return future

    def forget(self, correlation_id: str) -> None:
        self._pending.pop(correlation_id, None)

    async def _read(self) -> None:
        """Dispatch replies; resubscribe after a lost connection. Subscribed once Redis confirmed it
        (a request sent before could be answered before the subscription, or refused: NOPERM)."""
        while True:
            pubsub = self.redis.pubsub()
            try:
                await pubsub.subscribe(self.channel)
                async for message in pubsub.listen():
                    if message["type"] == "message":
                        self._deliver(message["data"])
                    elif message["type"] == "subscribe":
                        self._subscribed.set()
            except REFUSALS:
                raise  # retrying cannot fix credentials or rights
            except (RedisConnectionError, OSError):
                log.warning("reply channel lost; resubscribing")
                await asyncio.sleep(0.2)
            finally:
                with contextlib.suppress(Exception):
                    await asyncio.shield(pubsub.aclose())

    def _deliver(self, raw: bytes) -> None:
        try:
            correlation_id, value = self.decode(raw)
        except (ValueError, KeyError, TypeError):
            log.warning("ignored a reply that could not be read: %r", raw[:200])
            return
        future = self._pending.pop(correlation_id, None)
        if future is not None and not future.done():
            future.set_result(value)


async def _cancel(task: asyncio.Task) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def _decode_envelope(raw: bytes) -> tuple[str, tuple[int, Any, dict[str, str]]]:
    body, headers = wire.decode(raw)
    return headers["correlation_id"], (int(headers.get("status", 200)), body, headers)


class RpcTransport:
    """Requests on the operation streams, replies on this client's own channel."""

    def __init__(
        self,
        redis_url: str,
        prefix: str,
        *,
        timeout: float = 30.0,
        maxlen: int = REQUEST_STREAM_MAXLEN,
        max_connections: int = 32,
    ) -> None:
        self.channels = Channels(prefix)
        self.timeout = timeout
        self.maxlen = maxlen
        self.redis = connect_redis(redis_url, max_connections, timeout)
        self.replies = ReplyChannel(self.redis, self.channels.reply(uuid.uuid4().hex), _decode_envelope, timeout)

    @property
    def reply_channel(self) -> str:
        return self.replies.channel

    async def connect(self) -> None:
        await self.replies.open()

    async def close(self) -> None:
        await self.replies.close()
        await self.redis.aclose()
        await self.redis.connection_pool.disconnect()

    async def request(
        self, op: Op, body: Any, timeout: float | None = None, request_id: str | None = None
    ) -> tuple[int, Any]:
        """Send one request and wait for its (status, body) reply."""
        status, result, _ = await self.exchange(op, body, timeout, request_id)
        return status, result

    async def exchange(
        self, op: Op, body: Any, timeout: float | None = None, request_id: str | None = None
    ) -> tuple[int, Any, dict[str, str]]:
        """Send one request and wait for its reply: (status, body, headers). Writes with the
        same `request_id` act once; a repeat gets the first reply."""
        timeout = timeout or self.timeout
        deadline = time.time() + timeout  # the service drops the request after it; we stop waiting then
        correlation_id = uuid.uuid4().hex
        future = self.replies.expect(correlation_id)
        headers = {
            "correlation_id": correlation_id,
            "reply_to": self.reply_channel,
            "deadline": f"{deadline:.3f}",
            "request_id": request_id or correlation_id,
        }
        try:
            await self.redis.xadd(
                self.channels.rpc(op),
                {wire.DATA_FIELD: wire.encode(body, headers)},
                maxlen=self.maxlen,
                approximate=True,
            )
            return await asyncio.wait_for(future, max(0.0, deadline - time.time()))
        except TimeoutError:
            raise ServiceUnavailable(504, f"No reply to {op} within {timeout} s.") from None
        except (RedisConnectionError, OSError) as exc:
            raise ServiceUnavailable(503, f"Redis is not reachable: {exc}") from None
        finally:
            self.replies.forget(correlation_id)
