"""Runs the foreman tick on exactly one replica at a time, under a lease in Redis."""

from __future__ import annotations

import logging

from redis.asyncio import Redis

from services import foreman, leases, requests
from services.db import Database

log = logging.getLogger("workpools.foreman")

RENEW = """
if redis.call('get', KEYS[1]) == ARGV[1] then
    return redis.call('pexpire', KEYS[1], ARGV[2])
end
return redis.call('set', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) and 1 or 0
"""
RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""


class Lease:
    """`holds()` takes or renews the lease; a holder that stops renewing loses it after `ttl`."""

    def __init__(self, redis: Redis, key: str, owner: str, ttl: float) -> None:
        self.redis, self.key, self.owner, self.ttl_ms = redis, key, owner, int(ttl * 1000)
        self._renew = redis.register_script(RENEW)
        self._release = redis.register_script(RELEASE)

    async def holds(self) -> bool:
        return bool(await self._renew(keys=[self.key], args=[self.owner, self.ttl_ms]))

    async def release(self) -> None:
        await self._release(keys=[self.key], args=[self.owner])


async def expire_leases(db: Database, lease: Lease) -> None:
    """Claim-mode leases that ran out are given back, by the foreman's replica, often."""
    if await lease.holds():
        await leases.expire_leases(db)


async def foreman_tick(db: Database, lease: Lease, rules: foreman.ForemanRules) -> None:
    """One period: when this replica holds the lease, run one tick."""
    if await lease.holds():
        report = await foreman.run_once(db, rules)
        await requests.forget_old(db)
        log.debug("foreman tick: %s", report)
