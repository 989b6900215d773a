"""Multiplexed request/reply over Redis: one reply channel per client, futures by correlation id.

Failures are fast and said once: a Redis that cannot be reached when a client opens raises
`ServiceUnavailable` at once (not after the timeout); a connection lost later is logged once,
fails the requests waiting for a reply (their replies could be missed while unsubscribed) and
is retried in the background; a client used before `async with` raises `ClientNotOpen`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote, urlsplit

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import AuthenticationError, NoPermissionError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from client.config import prefix_or_default, redis_address, redis_url_or_default
from client.errors import ClientNotOpen, RedisUnreachable, ServiceUnavailable
from schemas import wire
from schemas.channels import REQUEST_STREAM_MAXLEN, Channels, Op

log = logging.getLogger("workpools.client")

Decode = Callable[[bytes], tuple[str, Any]]
"""Raw reply -> (correlation id, what the waiting request gets)."""

REFUSALS = (AuthenticationError, NoPermissionError)
"""Redis refused the client's user (wrong credentials, or an ACL right missing): raised as they are."""

UNREACHABLE = (RedisConnectionError, RedisTimeoutError, OSError)
"""Redis could not be reached, or stopped answering."""


def redis_user(redis_url: str) -> str | None:
    """The Redis user a URL logs in as (`redis://USER:PASSWORD@host`), or None for the default user."""
    user = urlsplit(redis_url).username
    return unquote(user) if user and user != "default" else None


def connect_redis(redis_url: str, max_connections: int, timeout: float) -> Redis:
    # Blocking pool: many concurrent requests wait for a connection instead of failing. A few
    # quick retries ride over a blip; a Redis that is down fails within about a second.
    pool = BlockingConnectionPool.from_url(
        redis_url,
        max_connections=max_connections,
        timeout=timeout,
        socket_connect_timeout=min(timeout, 5.0),
        retry=Retry(ExponentialWithJitterBackoff(0.05, 0.5), 3),
    )
    return Redis(connection_pool=pool)


def address_of(redis: Redis) -> str:
    """Where `redis` connects, without credentials (for messages)."""
    kwargs = redis.connection_pool.connection_kwargs
    if "path" in kwargs:
        return f"unix://{kwargs['path']}"
    return f"redis://{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}/{kwargs.get('db', 0)}"


def unreachable(redis: Redis, exc: BaseException | None = None) -> RedisUnreachable:
    reason = f": {str(exc).rstrip('.')}" if exc is not None and str(exc) else ""
    return RedisUnreachable(503, f"Redis at {address_of(redis)} is not reachable{reason}.")


class ReplyChannel:
    """One pub/sub subscription that routes every reply to the request waiting for it."""

    def __init__(self, redis: Redis, channel: str, decode: Decode, timeout: float) -> None:
        self.redis, self.channel, self.decode, self.timeout = redis, channel, decode, timeout
        self._pending: dict[str, asyncio.Future] = {}
        self._reader: asyncio.Task | None = None
        self._subscribed = asyncio.Event()

    @property
    def is_open(self) -> bool:
        """Opened and not closed (it may be resubscribing after a lost connection)."""
        return self._reader is not None

    async def open(self) -> None:
        """Subscribe; raise at once if Redis cannot be reached or refuses this client."""
        self._reader = asyncio.create_task(self._read())
        subscribed = asyncio.create_task(self._subscribed.wait())
        await asyncio.wait({self._reader, subscribed}, timeout=self.timeout, return_when=asyncio.FIRST_COMPLETED)
        subscribed.cancel()
        if self._subscribed.is_set():
            return
        reader, self._reader = self._reader, None
        if not reader.done():
            await _cancel(reader)
            raise RedisUnreachable(503, f"Redis at {address_of(self.redis)} did not answer within {self.timeout} s.")
        error = reader.exception()
        if isinstance(error, UNREACHABLE) and not isinstance(error, REFUSALS):
            raise unreachable(self.redis, error) from None
        reader.result()  # Redis refused this client (credentials, ACL rights): raise that, clearly

    async def subscribed(self, timeout: float) -> None:
        """Wait (at most `timeout`) until the channel is subscribed again after a lost connection."""
        if self._subscribed.is_set():
            return
        try:
            await asyncio.wait_for(self._subscribed.wait(), max(0.0, timeout))
        except TimeoutError:
            raise unreachable(self.redis) from None

    async def close(self) -> None:
        if self._reader is not None:
            await _cancel(self._reader)
            self._reader = None
        self._subscribed.clear()

    def expect(self, correlation_id: str) -> asyncio.Future:
        future = asyncio.get_running_loop().create_future()
        self._pending[correlation_id] = future
        return future

    def forget(self, correlation_id: str) -> None:
        self._pending.pop(correlation_id, None)

    async def _read(self) -> None:
        """Dispatch replies; resubscribe after a lost connection. Subscribed once Redis confirmed it
        (a request sent before could be answered before the subscription, or refused: NOPERM).
        A first subscription that fails ends the task: `open` reports why."""
        lost = 0
        while True:
            pubsub = self.redis.pubsub()
            try:
                await pubsub.subscribe(self.channel)
                async for message in pubsub.listen():
                    if message["type"] == "message":
                        self._deliver(message["data"])
                    elif message["type"] == "subscribe":
                        if lost:
                            log.warning("reply channel subscribed again after %d attempts", lost)
                        lost = 0
                        self._subscribed.set()
            except REFUSALS:
                raise  # retrying cannot fix credentials or rights
            except UNREACHABLE as exc:
                if not self._subscribed.is_set() and not lost:
                    raise  # never subscribed: nothing to resume
                if not lost:
                    log.warning("reply channel lost (%s); resubscribing until Redis is back", exc)
                self._subscribed.clear()
                self._fail_pending(exc)
                lost += 1
                await asyncio.sleep(min(0.1 * 2**lost, 2.0))
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

    def _fail_pending(self, exc: BaseException) -> None:
        """Replies published while unsubscribed are lost: the waiting requests fail now (503) and
        can be sent again (with the same request id) instead of waiting out their timeout."""
        pending, self._pending = self._pending, {}
        for future in pending.values():
            if not future.done():
                future.set_exception(unreachable(self.redis, exc))


async def _cancel(task: asyncio.Task) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def _decode_envelope(raw: bytes) -> tuple[str, tuple[int, str, dict[str, str]]]:
    """The envelope only: the body stays JSON text, for its reader to parse by its type."""
    text, headers = wire.decode_envelope(raw)
    return headers["correlation_id"], (int(headers.get("status", 200)), text, headers)


def new_id() -> str:
    """A random 128-bit id, as 32 hex digits (a uuid4's randomness, without building a UUID)."""
    return os.urandom(16).hex()


class RpcTransport:
    """Requests on the operation streams, replies on this client's own channel.

    `redis_url` and `prefix` default to `WORKPOOLS_REDIS_URL` and `WORKPOOLS_PREFIX`, as for the
    service."""

    def __init__(
        self,
        redis_url: str | None = None,
        prefix: str | None = None,
        *,
        timeout: float = 30.0,
        maxlen: int | None = REQUEST_STREAM_MAXLEN,
        max_connections: int = 32,
        owner: str = "RpcTransport",
    ) -> None:
        self.prefix = prefix_or_default(prefix)
        self.channels = Channels(self.prefix)
        self.timeout = timeout
        self.maxlen = maxlen
        self.owner = owner
        self.redis_url = redis_url_or_default(redis_url)
        self.redis = connect_redis(self.redis_url, max_connections, timeout)
        self.replies = ReplyChannel(
            self.redis, self.channels.reply(uuid.uuid4().hex, redis_user(self.redis_url)), _decode_envelope, timeout
        )

    @property
    def reply_channel(self) -> str:
        return self.replies.channel

    @property
    def address(self) -> str:
        return redis_address(self.redis_url)

    async def connect(self) -> None:
        await self.replies.open()

    async def close(self) -> None:
        await self.replies.close()
        await self.redis.aclose()
        await self.redis.connection_pool.disconnect()

    def check_open(self) -> None:
        if not self.replies.is_open:
            raise ClientNotOpen(
                f"{self.owner} is not open: use it as `async with {self.owner}(...) as client:` "
                "(or await its __aenter__()) before sending requests."
            )

    async def request(
        self, op: Op | str, body: Any, timeout: float | None = None, request_id: str | None = None
    ) -> tuple[int, Any]:
        """Send one request and wait for its (status, body) reply."""
        status, result, _ = await self.exchange(op, body, timeout, request_id)
        return status, result

    async def exchange(
        self, op: Op | str, body: Any, timeout: float | None = None, request_id: str | None = None
    ) -> tuple[int, Any, dict[str, str]]:
        """Send one request and wait for its reply: (status, body, headers). Writes with the
        same `request_id` act once; a repeat gets the first reply."""
        status, text, headers = await self.exchange_text(op, body, timeout, request_id)
        return status, wire.parse_body(text), headers

    async def exchange_text(
        self, op: Op | str, body: Any, timeout: float | None = None, request_id: str | None = None
    ) -> tuple[int, str, dict[str, str]]:
        """`exchange`, the reply's body left as its JSON text ("" when empty); `body` may be
        JSON text already (a `str`)."""
        self.check_open()
        timeout = timeout or self.timeout
        deadline = time.time() + timeout  # the service drops the request after it; we stop waiting then
        await self.replies.subscribed(deadline - time.time())
        correlation_id = new_id()
        future = self.replies.expect(correlation_id)
        headers = {
            "correlation_id": correlation_id,
            "reply_to": self.reply_channel,
            "deadline": f"{deadline:.3f}",
            "timeout": f"{timeout:.3f}",  # counted by the Redis server's clock: survives a skewed clock here
            "request_id": request_id or correlation_id,
        }
        try:
            envelope = wire.encode_raw(body, headers) if isinstance(body, str) else wire.encode(body, headers)
            await self.redis.xadd(
                self.channels.rpc(op), {wire.DATA_FIELD: envelope}, maxlen=self.maxlen, approximate=True
            )
            async with asyncio.timeout(max(0.0, deadline - time.time())):
                reply: tuple[int, str, dict[str, str]] = await future
            return reply
        except TimeoutError:
            raise ServiceUnavailable(
                504,
                f'No replica answered {op} within {timeout} s on prefix "{self.prefix}" at {self.address}: '
                f"is `workpools serve` running there with WORKPOOLS_PREFIX={self.prefix}?",
            ) from None
        except REFUSALS:
            raise
        except UNREACHABLE as exc:
            raise unreachable(self.redis, exc) from None
        finally:
            self.replies.forget(correlation_id)
