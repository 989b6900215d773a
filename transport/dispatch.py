"""How a replica hands the requests it reads to its handlers: each in a task of its own, started by
the task that reads the stream."""

from __future__ import annotations

import asyncio
from typing import Any, TypeVar

from faststream.redis.subscriber.usecases import StreamConcurrentSubscriber, StreamSubscriber

SubscriberT = TypeVar("SubscriberT")


class TaskPerRequest(StreamConcurrentSubscriber):
    """FastStream's concurrent stream subscriber, with each message started by the reading task.

    FastStream's own puts a read message on an anyio memory stream; a second task takes it off
    and starts it in an anyio task group. Per message, that is two semaphore passes, a hand-off
    that wakes the second task, and an anyio task with its cancel scope: a third of a pool read's
    CPU at concurrency 32 (bench/README). Here the reading task waits for a free slot and starts
    the message's task itself. What stays as it was:

      * at most `max_workers` messages are handled at once; while none is free the subscriber
        reads nothing more (the entries it holds stay in its pending list);
      * a message is handled by FastStream's `consume` (its middlewares, context and lock);
      * a stop waits for the messages being handled up to the graceful timeout, then cancels
        the rest; a message read but not started is left pending, for the reclaimers.
    """

    _slots: asyncio.Semaphore
    _handling: set[asyncio.Task[None]]

    async def start(self) -> None:
        self._slots = asyncio.Semaphore(self.max_workers)
        self._handling = set()
        await super().start()

    def start_consume_task(self) -> None:
        """Nothing to start: there is no queue to serve (`consume_one` starts each message)."""

    async def consume_one(self, msg: Any) -> None:
        await self._slots.acquire()
        task = asyncio.create_task(self._handle(msg))
        self._handling.add(task)
        task.add_done_callback(self._handling.discard)

    async def _handle(self, msg: Any) -> None:
        try:
            await self.consume(msg)
        finally:
            self._slots.release()

    async def stop(self) -> None:
        await super().stop()  # waits for the messages being handled, up to the graceful timeout
        for task in list(getattr(self, "_handling", ())):
            task.cancel()


def task_per_request(subscriber: SubscriberT) -> SubscriberT:
    """`subscriber` (what `subscriber(stream=…, max_workers=…)` of a FastStream Redis router
    returned, before it starts) handing each message to a task of its own. FastStream builds its
    subscribers itself and takes no class for them, so the built one changes class; the two
    classes hold the same fields. With `max_workers` 1 FastStream handles one message at a time,
    without a queue, and the subscriber is left as it is."""
    if type(subscriber) is StreamConcurrentSubscriber:
        subscriber.__class__ = TaskPerRequest
    elif type(subscriber) is not StreamSubscriber:
        raise TypeError(f"not a stream subscriber: {type(subscriber).__name__}")
    return subscriber
