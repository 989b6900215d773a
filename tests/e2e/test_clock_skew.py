"""Deadlines that survive clock skew: a caller whose clock is far behind is served; a request
whose caller really stopped waiting is dropped, never silently (logged, counted, acknowledged)."""

from __future__ import annotations

import logging
import time
import uuid

from client import transport
from schemas import wire
from schemas.channels import Channels, Op
from tests.factories import make_pool, wait_until

HOUR = 3600.0


async def test_a_client_whose_clock_is_an_hour_behind_is_served(client, monkeypatch):
    pool = await client.create_work_pool(make_pool())
    real = time.time
    monkeypatch.setattr(transport.time, "time", lambda: real() - HOUR)  # skewed by far more than its 10 s timeout
    assert (await client.read_work_pool(pool.name)).name == pool.name
    assert (await client.create_work_queue(pool.name, {"name": "q"})).name == "q"


async def test_a_bare_deadline_from_a_clock_behind_is_served_and_a_real_timeout_is_dropped_with_a_trace(
    service, redis, prefix, caplog
):
    caplog.set_level(logging.WARNING, logger="workpools.requests")
    channels = Channels(prefix)
    stream = channels.rpc(Op.COUNT_WORK_POOLS)
    reply_to = channels.reply(uuid.uuid4().hex)
    pubsub = redis.pubsub(ignore_subscribe_messages=True)
    await pubsub.subscribe(reply_to)
    replies: dict[str, tuple[str, object]] = {}

    async def collect(correlation_id: str) -> bool:
        message = await pubsub.get_message(timeout=0.1)
        if message is not None:
            body, headers = wire.decode(message["data"])
            replies[headers["correlation_id"]] = (headers["status"], body)
        return correlation_id in replies

    try:
        # entered five seconds ago (an explicit entry id: the Redis clock), with a one-second timeout
        seconds, microseconds = await redis.time()
        entered_ms = seconds * 1000 + microseconds // 1000 - 5000
        late = wire.encode({}, {"correlation_id": "late", "reply_to": reply_to, "timeout": "1"})
        late_id = await redis.xadd(stream, {wire.DATA_FIELD: late}, id=f"{entered_ms}-0")
        # an old-style absolute deadline by a clock an hour behind: before the entry, so not trusted
        skewed = {"correlation_id": "skewed", "reply_to": reply_to, "deadline": f"{time.time() - HOUR + 10:.3f}"}
        await redis.xadd(stream, {wire.DATA_FIELD: wire.encode({}, skewed)})
        await wait_until(lambda: collect("skewed"), timeout=10)
        assert replies == {"skewed": ("200", 0)}  # and "late" got no reply
        assert (await redis.xpending(stream, channels.rpc_group))["pending"] == 0
    finally:
        await pubsub.aclose()
    dropped = [r.getMessage() for r in caplog.records if r.getMessage().startswith("dropped request late")]
    assert len(dropped) == 1 and "its caller stopped waiting 4." in dropped[0], dropped
    assert any("the caller's clock is behind" in r.getMessage() for r in caplog.records)
    assert late_id.decode() == f"{entered_ms}-0"
