"""Exactly one replica acts on each worker message: claims raced by three replicas."""

from __future__ import annotations

import asyncio

from handlers.worker_channel import Claims
from schemas.channels import Channels
from tests.factories import wait_until


async def test_each_message_is_claimed_by_exactly_one_of_three_replicas(redis, prefix):
    channels = Channels(prefix)
    replicas = [Claims(redis, channels) for _ in range(3)]
    messages = [f'{{"worker_name": "w{i}", "work_pool_name": "p"}}'.encode() for i in range(1000)]
    won = await asyncio.gather(*(replica.won(messages) for replica in replicas))
    claimed = [index for indexes in won for index in indexes]
    assert sorted(claimed) == list(range(1000))  # every message once, none twice
    assert await replicas[0].won(messages) == []  # a late duplicate delivery is ignored


async def test_claims_expire(redis, prefix):
    claims = Claims(redis, Channels(prefix), ttl_seconds=0.05)
    assert await claims.won([b"x"]) == [0]
    assert await claims.won([b"x"]) == []
    await wait_until(lambda: _claimable(claims), timeout=2)


async def _claimable(claims: Claims) -> bool:
    return await claims.won([b"x"]) == [0]
