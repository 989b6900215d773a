"""Exactly one replica acts on each worker message: ids marked seen, raced by three replicas."""

from __future__ import annotations

import asyncio
import time

from handlers.worker_channel import SeenMessages, message_key, staleness
from schemas.channels import Channels
from schemas.worker_channel import HeartbeatMessage
from tests.factories import wait_until


async def test_each_message_is_acted_on_by_exactly_one_of_three_replicas(redis, prefix):
    channels = Channels(prefix)
    replicas = [SeenMessages(redis, channels) for _ in range(3)]
    keys = [f"beat.{i}" for i in range(1000)]
    firsts = await asyncio.gather(*(replica.first(keys) for replica in replicas))
    acted = [index for indexes in firsts for index in indexes]
    assert sorted(acted) == list(range(1000))  # every message once, none twice
    assert await replicas[0].first(keys) == []  # a late duplicate delivery is ignored


async def test_a_mark_lasts_twice_the_message_lifetime(redis, prefix):
    seen = SeenMessages(redis, Channels(prefix), lifetime_seconds=0.05)
    assert seen.ttl_ms == 100
    assert await seen.first(["x"]) == [0]
    assert await seen.first(["x"]) == []
    await wait_until(lambda: _markable(seen), timeout=2)


async def _markable(seen: SeenMessages) -> bool:
    return await seen.first(["x"]) == [0]


def test_messages_are_known_by_id_else_by_their_bytes():
    beat = HeartbeatMessage(message_id="m1", work_pool_name="p", worker_name="w")
    same_id = HeartbeatMessage(message_id="m1", work_pool_name="p", worker_name="other")
    assert message_key("beat", b"a", beat) == message_key("beat", b"b", same_id)
    assert message_key("beat", b"a", beat) != message_key("poll", b"a", beat)
    anonymous = HeartbeatMessage(work_pool_name="p", worker_name="w")
    assert message_key("beat", b"a", anonymous) != message_key("beat", b"b", anonymous)


def test_a_message_older_than_its_lifetime_is_refused():
    now = time.time()
    assert staleness(HeartbeatMessage(work_pool_name="p", worker_name="w"), now) is None  # no sent_at
    fresh = HeartbeatMessage(work_pool_name="p", worker_name="w", sent_at=now - 29)
    assert staleness(fresh, now, lifetime=30) is None
    late = HeartbeatMessage(work_pool_name="p", worker_name="w", sent_at=now - 31)
    assert staleness(late, now, lifetime=30).startswith("Message sent 31.0 s ago")
    ahead = HeartbeatMessage(work_pool_name="p", worker_name="w", sent_at=now + 31)
    assert staleness(ahead, now, lifetime=30) is not None
