"""Start-up check: may this replica's Redis user run every command the replica uses, on its
prefix's keys and channels? Each command is tried once on `{prefix}.probe`, a key that never
exists, in a way that changes nothing; a NOPERM answer stops the replica at start, naming what is
missing, rather than leaving it "serving" while some loop fails on every round.

The commands are those of the ACL user in the README (section Security).
"""

from __future__ import annotations

import hashlib

from redis.asyncio import Redis
from redis.exceptions import NoPermissionError

from schemas.channels import Channels

PROBE_SCRIPT = "return 1"


def probes(key: str) -> list[tuple[str, ...]]:
    """One harmless call of every command the replica sends (scripts call SET/GET/PEXPIRE/DEL)."""
    sha = hashlib.sha1(PROBE_SCRIPT.encode()).hexdigest()
    return [
        ("PING",),  # the broker's health checks
        ("XGROUP", "CREATE", key, "probe", "$"),  # no MKSTREAM: the key does not exist, nothing is made
        ("XREADGROUP", "GROUP", "probe", "probe", "COUNT", "1", "STREAMS", key, ">"),
        ("XAUTOCLAIM", key, "probe", "probe", "0", "0-0"),
        ("XCLAIM", key, "probe", "probe", "0", "0-1", "JUSTID"),
        ("XPENDING", key, "probe", "IDLE", "0", "-", "+", "1", "probe"),  # no key: NOGROUP, not NOPERM
        ("XACK", key, "probe", "0-1"),
        ("XADD", key, "NOMKSTREAM", "*", "probe", "1"),
        ("XDEL", key, "0-1"),
        ("XRANGE", key, "-", "+", "COUNT", "1"),  # the status page: dispatch latency
        ("XREVRANGE", key, "+", "-", "COUNT", "1"),  # the status page: recent events
        ("XINFO", "GROUPS", key),  # housekeeping: trim what every group has read, remove gone consumers
        ("XINFO", "CONSUMERS", key, "probe"),
        ("XTRIM", key, "MINID", "0-1"),
        ("XGROUP", "DELCONSUMER", key, "probe", "probe"),
        ("PUBLISH", key, "probe"),
        ("SET", key, "1", "XX"),
        ("GET", key),
        ("PEXPIRE", key, "1"),
        ("DEL", key),
        ("SCRIPT", "LOAD", PROBE_SCRIPT),
        ("EVALSHA", sha, "0"),
    ]


async def check_rights(redis: Redis, prefix: str) -> None:
    """Raise `NoPermissionError` naming the first command or key/channel the user may not use."""
    key = Channels(prefix).probe
    commands = probes(key)
    pipe = redis.pipeline(transaction=False)
    for command in commands:
        pipe.execute_command(*command)
    for command, result in zip(commands, await pipe.execute(raise_on_error=False), strict=True):
        if isinstance(result, NoPermissionError):
            raise NoPermissionError(f"{result} (start-up check: {command[0]} on {key})")
    async with redis.pipeline(transaction=True) as pipe:  # MULTI/EXEC (the reclaimer moves entries in one)
        await pipe.xdel(key, "0-1").execute()
    pubsub = redis.pubsub()
    try:
        await pubsub.subscribe(key)
        await pubsub.get_message(timeout=1.0)  # the confirmation, or NOPERM for the channel
        # every user's worker channels: Redis grants a PSUBSCRIBE pattern only when the ACL
        # names that very pattern (README's line), so each is tried as the replica sends it
        channels = Channels(prefix)
        for pattern in (channels.users_worker_heartbeats, channels.users_worker_polls):
            await pubsub.psubscribe(pattern)
            await pubsub.get_message(timeout=1.0)
    finally:
        await pubsub.aclose()
