"""Requests handed to their handlers by the reading task, each in a task of its own
(`transport.dispatch`), on a real Redis: never more at once than `max_workers`, every request
handled, nothing read while no slot is free, and a stop that lets running requests finish and
leaves the unstarted ones pending."""

import asyncio

import pytest
from faststream import AckPolicy
from faststream.redis import RedisBroker, StreamSub
from faststream.redis.subscriber.usecases import StreamConcurrentSubscriber, StreamSubscriber

from schemas.channels import Channels
from tests.factories import wait_until
from transport.dispatch import TaskPerRequest, task_per_request

WORKERS = 3


class Handler:
    """Holds every request until `release` is set; records how many ran at once."""

    def __init__(self) -> None:
        self.running = 0
        self.most = 0
        self.started: list[int] = []
        self.finished: list[int] = []
        self.release = asyncio.Event()

    async def __call__(self, body: dict) -> None:
        self.running += 1
        self.most = max(self.most, self.running)
        self.started.append(body["k"])
        try:
            await self.release.wait()
        finally:
            self.running -= 1
        self.finished.append(body["k"])


async def _start(redis_url: str, stream: str, group: str, handler: Handler) -> tuple[RedisBroker, TaskPerRequest]:
    broker = RedisBroker(redis_url, graceful_timeout=5)
    reader = broker.subscriber(
        stream=StreamSub(stream, group=group, consumer="c", max_records=10, polling_interval=100),
        max_workers=WORKERS,
        ack_policy=AckPolicy.ACK,
    )
    subscriber = task_per_request(reader)
    subscriber(handler)
    await broker.start()
    return broker, subscriber


async def _requests(redis, prefix: str, count: int) -> tuple[str, str]:
    """A request stream with its consumer group and `count` requests `{"k": 0..count-1}`."""
    channels = Channels(prefix)
    stream, group = channels.rpc("dispatch"), channels.rpc_group
    await redis.xgroup_create(stream, group, id="0", mkstream=True)
    for k in range(count):
        await redis.xadd(stream, {"__data__": f'{{"k": {k}}}'.encode()})
    return stream, group


async def _pending(redis, stream: str, group: str) -> int:
    return (await redis.xpending(stream, group))["pending"]


async def test_at_most_max_workers_at_once_and_every_request_handled(redis, redis_url, prefix):
    stream, group = await _requests(redis, prefix, 10)
    handler = Handler()
    broker, subscriber = await _start(redis_url, stream, group, handler)
    try:
        assert type(subscriber) is TaskPerRequest
        await wait_until(lambda: handler.running == WORKERS)
        # the slots are full: the others wait, read but not started
        assert handler.started == [0, 1, 2]
        assert await _pending(redis, stream, group) == 10

        handler.release.set()
        await wait_until(lambda: len(handler.finished) == 10)
        assert sorted(handler.finished) == list(range(10))
        assert handler.most == WORKERS
        # FastStream acknowledges each once its handler returned
        await wait_until(lambda: _none_pending(redis, stream, group))
    finally:
        await broker.stop()


async def _none_pending(redis, stream: str, group: str) -> bool:
    return await _pending(redis, stream, group) == 0


async def test_a_stop_lets_running_requests_finish_and_leaves_the_rest_pending(redis, redis_url, prefix):
    stream, group = await _requests(redis, prefix, 5)
    handler = Handler()
    broker, subscriber = await _start(redis_url, stream, group, handler)
    await wait_until(lambda: handler.running == WORKERS)

    stopping = asyncio.create_task(broker.stop())
    await wait_until(lambda: not subscriber.running)  # the stop has begun: it waits for the three
    assert not stopping.done()
    assert handler.running == WORKERS
    handler.release.set()
    await asyncio.wait_for(stopping, 10)

    assert sorted(handler.finished) == [0, 1, 2]
    # the two read and never started stay pending, for the reclaimers
    assert await _pending(redis, stream, group) == 2


def test_only_stream_subscribers_are_changed():
    broker = RedisBroker()
    concurrent = broker.subscriber(stream="s1", max_workers=2)
    one_at_a_time = broker.subscriber(stream="s2")
    channel = broker.subscriber("c", max_workers=2)

    assert type(concurrent) is StreamConcurrentSubscriber
    assert type(task_per_request(concurrent)) is TaskPerRequest
    assert type(one_at_a_time) is StreamSubscriber
    assert task_per_request(one_at_a_time) is one_at_a_time
    assert type(one_at_a_time) is StreamSubscriber
    with pytest.raises(TypeError, match="not a stream subscriber"):
        task_per_request(channel)
