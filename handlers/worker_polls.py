"""Worker polls on pub/sub: answered once (claims), in claim mode if asked, and long polls that
wait for work without touching the database until a wake or a due time."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import weakref
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterator
from datetime import datetime, timedelta
from typing import Any

from faststream.redis import RedisChannelMessage
from pydantic import ValidationError
from redis.asyncio import Redis

from handlers.worker_channel import Claims, error_body, invalid_reply, reply_body
from schemas.channels import Channels
from schemas.scheduling import WorkerFlowRun
from schemas.worker_channel import PollMessage
from services import scheduling
from services.db import Database
from services.errors import Invalid, WorkPoolsError, internal_error

log = logging.getLogger("workpools.polls")
MAX_POLL_BYTES = 65_536


class Waiters:
    """Long polls waiting on this replica, by pool name; `wake` is called for `{prefix}.wake`."""

    def __init__(self) -> None:
        self._waiting: dict[str, set[asyncio.Event]] = defaultdict(set)

    @contextlib.contextmanager
    def waiting(self, work_pool_name: str) -> Iterator[asyncio.Event]:
        event = asyncio.Event()
        self._waiting[work_pool_name].add(event)
        try:
            yield event
        finally:
            self._waiting[work_pool_name].discard(event)
            if not self._waiting[work_pool_name]:
                del self._waiting[work_pool_name]

    def wake(self, work_pool_name: str) -> None:
        for event in self._waiting.get(work_pool_name, ()):
            event.set()

    def wake_all(self) -> None:
        for name in list(self._waiting):
            self.wake(name)

    async def listen(self, redis: Redis, channel: str, stopping: asyncio.Event) -> None:
        while not stopping.is_set():
            pubsub = redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(channel)
                while not stopping.is_set():
                    message = await pubsub.get_message(timeout=0.5)
                    if message is not None and message["type"] == "message":
                        self.wake(message["data"].decode())
            except Exception:
                log.warning("wake channel lost; resubscribing", exc_info=True)
                await asyncio.sleep(0.5)
            finally:
                await asyncio.shield(pubsub.aclose())


class PollServer:
    """Answers poll messages in tasks of their own, so waiting polls hold no subscriber slot;
    at most `concurrency` of them query the database at once."""

    def __init__(
        self,
        redis: Redis,
        claims: Claims,
        db: Database,
        waiters: Waiters,
        ready: Callable[[Any], Awaitable[Any]],
        concurrency: int,
    ) -> None:
        self.redis, self.claims, self.db, self.waiters, self.ready = redis, claims, db, waiters, ready
        self._queries = asyncio.Semaphore(concurrency)
        self._claiming: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()
        self._tasks: set[asyncio.Task] = set()
        self._stopping = False

    def submit(self, raw: bytes) -> None:
        if len(raw) > MAX_POLL_BYTES:  # a poll is ~300 bytes
            task = asyncio.create_task(self.refuse_oversized(raw))
        else:
            task = asyncio.create_task(self.answer(raw))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def refuse_oversized(self, raw: bytes) -> None:
        """Answer 422 when the message says where to (and is small enough to read); else drop it."""
        if len(raw) > 16 * MAX_POLL_BYTES:
            log.warning("dropped a %d-byte poll message", len(raw))
            return
        if not await self.claims.won([raw]):
            return
        try:
            message = json.loads(raw)
            reply_to, correlation_id = message["reply_to"], str(message["correlation_id"])
        except (ValueError, KeyError, TypeError):
            return
        if isinstance(reply_to, str):
            oversized = Invalid(f"Message is larger than {MAX_POLL_BYTES} bytes.")
            await self.redis.publish(reply_to, error_body(correlation_id, oversized))

    async def stop(self, timeout: float = 5.0) -> None:
        """Waiting polls are answered now (empty); the rest finish or are cancelled."""
        self._stopping = True
        self.waiters.wake_all()
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=timeout)
            for task in pending:
                task.cancel()

    async def answer(self, raw: bytes) -> None:
        if not await self.claims.won([raw]):
            return
        try:
            poll = PollMessage.model_validate_json(raw)
        except ValidationError as exc:
            if (answer := invalid_reply(raw, exc)) is not None:
                await self.redis.publish(*answer)
            return
        try:
            runs = await self._poll(poll)
        except WorkPoolsError as exc:
            await self.redis.publish(poll.reply_to, error_body(poll.correlation_id, exc))
            return
        except Exception:
            log.exception("unexpected error while answering a poll")
            await self.redis.publish(poll.reply_to, error_body(poll.correlation_id, internal_error()))
            return
        result = [run.model_dump(mode="json") for run in runs]
        await self.redis.publish(poll.reply_to, reply_body(poll.correlation_id, 200, result=result))

    def _turn(self, poll: PollMessage) -> contextlib.AbstractAsyncContextManager:
        """Claims of one pool take turns here: PostgreSQL runs them one at a time anyway (the
        pool row lock), and each one waiting there would hold a connection others need."""
        if not poll.claim:
            return contextlib.nullcontext()
        if (turn := self._claiming.get(poll.work_pool_name)) is None:
            turn = self._claiming[poll.work_pool_name] = asyncio.Lock()
        return turn

    async def _poll(self, poll: PollMessage) -> list[WorkerFlowRun]:
        """Poll; with `wait_seconds`, poll again on each wake or due time until runs come or
        the wait ends. A bounded `scheduled_before` slides with the time waited."""
        started = time.monotonic()
        marked = False
        with self.waiters.waiting(poll.work_pool_name) as woken:
            while True:
                woken.clear()
                async with self._turn(poll), self._queries:
                    before = _slide(poll.scheduled_before, time.monotonic() - started)
                    runs, mark = await scheduling.get_scheduled_flow_runs(
                        self.db,
                        poll.work_pool_name,
                        poll.work_queue_names,
                        before,
                        poll.scheduled_after,
                        poll.limit,
                        claim=poll,
                    )
                if not marked:  # one ready mark per poll message, however long it waits
                    await self.ready(mark)
                    marked = True
                remaining = poll.wait_seconds - (time.monotonic() - started)
                if runs or remaining <= 0 or self._stopping:
                    return runs
                timer = remaining
                if before is not None:
                    due = await scheduling.next_due(self.db, poll.work_pool_name, poll.work_queue_names, before)
                    if due is not None:
                        timer = min(timer, max(0.0, (due - before).total_seconds()))
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(woken.wait(), timer)


def _slide(scheduled_before: datetime | None, waited: float) -> datetime | None:
    """A long poll's `scheduled_before`, moved on by the time it has waited (capped at the end of time)."""
    if scheduled_before is None:
        return None
    try:
        return scheduled_before + timedelta(seconds=waited)
    except OverflowError:
        return scheduled_before


def register(router: Any, channels: Channels, server: PollServer) -> None:
    @router.subscriber(
        channels.worker_polls,
        title=channels.worker_polls,
        description="Worker polls (plain JSON PollMessage): answered once, on the message's reply_to; "
        "claim=true leases the runs; wait_seconds waits for work.",
    )
    async def worker_poll(message: RedisChannelMessage) -> None:
        server.submit(message.body)
