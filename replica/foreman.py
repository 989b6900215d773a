"""Runs the foreman tick and the run-lease sweep on exactly one replica at a time, under a
lease in Redis (the `ForemanLease`; not to be confused with the claim-mode leases of runs)."""

from __future__ import annotations

import logging

from redis.asyncio import Redis

from services import foreman, leases
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


class ForemanLease:
    """Which replica runs the foreman: `holds()` takes or renews this Redis key; a holder that
    stops renewing loses it after `ttl`."""

    def __init__(self, redis: Redis, key: str, owner: str, ttl: float) -> None:
        self.redis, self.key, self.owner, self.ttl_ms = redis, key, owner, int(ttl * 1000)
        self._renew = redis.register_script(RENEW)
        self._release = redis.register_script(RELEASE)

    async def holds(self) -> bool:
        return bool(await self._renew(keys=[self.key], args=[self.owner, self.ttl_ms]))

    async def release(self) -> None:
        await self._release(keys=[self.key], args=[self.owner])


async def sweep_run_leases(db: Database, foreman_lease: ForemanLease) -> None:
    """Claim-mode leases of runs that ran out are given back, by the foreman's replica, often."""
    if await foreman_lease.holds():
        await leases.expire_leases(db)


async def foreman_tick(db: Database, foreman_lease: ForemanLease, rules: foreman.ForemanRules) -> None:
    """One period: when this replica holds the foreman lease, run one tick."""
    if await foreman_lease.holds():
        report = await foreman.run_once(db, rules)
        db.observe("foreman_tick", report=report)
        log.debug("foreman tick: %s", report)
