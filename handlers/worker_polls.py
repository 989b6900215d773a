"""Worker polls on pub/sub: answered once (by the replica that sees the message first), in claim
mode if asked, and long polls that wait for work without touching the database until a wake or
a due time. Every poll that names a reply address inside its user's reply namespace gets an
answer, errors included; a poll naming any other `reply_to` is not acted on (nothing claimed,
no ready mark), not answered, logged and counted (`ReplyNamespace`)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import weakref
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterator
from datetime import datetime, timedelta
from typing import Any

from faststream.redis import PubSub, RedisChannelMessage
from pydantic import ValidationError
from redis.asyncio import Redis

from handlers.worker_channel import (
    ReplyNamespace,
    SeenMessages,
    address,
    answered,
    channel_user,
    error_body,
    message_key,
    plain,
    staleness,
)
from schemas.channels import Channels
from schemas.scheduling import ReadyMark, WorkerFlowRun
from schemas.worker_channel import PollMessage
from services import idempotency, scheduling
from services.db import Database
from services.errors import Invalid

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
        seen: SeenMessages,
        db: Database,
        waiters: Waiters,
        ready: Callable[[Any], Awaitable[Any]],
        concurrency: int,
    ) -> None:
        self.redis, self.seen, self.db, self.waiters, self.ready = redis, seen, db, waiters, ready
        self.namespace = ReplyNamespace(seen.channels)
        self._queries = asyncio.Semaphore(concurrency)
        self._claiming: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()
        self._tasks: set[asyncio.Task] = set()
        self._stopping = False

    def submit(self, raw: bytes, user: str | None = None) -> None:
        """A poll that came in on `user`'s worker channel (None: the shared one)."""
        if len(raw) > MAX_POLL_BYTES:  # a poll is ~300 bytes
            task = asyncio.create_task(self.refuse_oversized(raw, user))
        else:
            task = asyncio.create_task(self.answer(raw, user))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def refuse_oversized(self, raw: bytes, user: str | None = None) -> None:
        """Answer 422 when the message says where to (and is small enough to read); else drop it."""
        if len(raw) > 16 * MAX_POLL_BYTES or (where := address(raw)) is None:
            log.warning("dropped a %d-byte poll message", len(raw))
            return
        reply_to, correlation_id, message_id = where
        if not await self.seen.first([message_key("poll", raw, None, message_id or correlation_id)]):
            return
        if not self.namespace.allows("poll", reply_to, user, "too large"):
            return
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

    async def answer(self, raw: bytes, user: str | None = None) -> None:
        """Act on a poll once (the replica that marks it first) and answer it, unless its
        `reply_to` lies outside its user's reply namespace: then it is not acted on at all (a
        claim would lease runs nobody receives) and not answered."""
        try:
            poll = PollMessage.model_validate_json(raw)
        except ValidationError as exc:
            if (where := address(raw)) is not None:
                reply_to, correlation_id, message_id = where
                if await self.seen.first([message_key("poll", raw, None, message_id or correlation_id)]):
                    if self.namespace.allows("poll", reply_to, user, "invalid"):
                        await self.redis.publish(reply_to, error_body(correlation_id, exc))
            return
        if not await self.seen.first([message_key("poll", raw, poll, poll.correlation_id)]):
            return
        if not self.namespace.allows("poll", poll.reply_to, user, "not acted on"):
            return
        await answered(self.redis, poll.reply_to, poll.correlation_id, lambda: self._answer(poll))

    async def _answer(self, poll: PollMessage) -> tuple[int, Any]:
        if (stale := staleness(poll, time.time(), self.seen.lifetime)) is not None:
            log.info("refused a poll of %s: %s", poll.worker_name, stale)
            raise Invalid(stale)
        runs = await self._poll(poll)
        return 200, runs

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
                    runs, mark = await self._fetch(poll, before)
                if not marked and mark is not None:  # one ready mark per poll message, however long it waits
                    marked = True
                    try:
                        await self.ready(mark)
                    except Exception:  # the poll has committed: its answer stands
                        log.warning("could not publish the ready mark of a poll", exc_info=True)
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

    async def _fetch(self, poll: PollMessage, before: datetime | None) -> tuple[list[WorkerFlowRun], ReadyMark | None]:
        """One poll. A claim with a `request_id` acts once: sent again, it gets the runs the
        first one leased (and announces no second ready mark)."""

        async def fetch() -> tuple[list[WorkerFlowRun], ReadyMark]:
            return await scheduling.get_scheduled_flow_runs(
                self.db,
                poll.work_pool_name,
                poll.work_queue_names,
                before,
                poll.scheduled_after,
                poll.limit,
                claim=poll,
            )

        if not (poll.claim and poll.request_id):
            return await fetch()
        request_id = f"worker-poll/{poll.work_pool_name}/{poll.worker_name}/{poll.request_id}"
        try:
            async with idempotency.once(self.db, request_id, "worker_poll") as record:
                runs, mark = await fetch()
                if not runs:
                    raise _NothingClaimed(mark)  # nothing to remember: a retry may claim afresh
                record(200, plain(runs))
                return runs, mark
        except _NothingClaimed as nothing:
            return [], nothing.mark
        except idempotency.Replayed as replayed:
            log.info("claim %s already ran; answering its runs again", request_id)
            return [WorkerFlowRun.model_validate(item) for item in replayed.reply], None


class _NothingClaimed(Exception):
    def __init__(self, mark: ReadyMark) -> None:
        super().__init__()
        self.mark = mark


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

    @router.subscriber(
        channel=PubSub(channels.users_worker_polls, pattern=True),
        title=channels.users_worker_polls,
        description="Worker polls of the workers of one Redis user, on that user's own channel "
        "(`{prefix}.workers.poll.{user}`): as above, answered only inside that user's reply namespace.",
    )
    async def users_worker_poll(message: RedisChannelMessage) -> None:
        server.submit(message.body, channel_user(channels, message.raw_message["channel"]))
