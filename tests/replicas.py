"""Real replica processes (`workpools serve`) for tests where separate processes matter."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

from redis.asyncio import Redis

from client import ServiceUnavailable, WorkPoolClient
from schemas.channels import Op
from schemas.settings import Settings

SERVE = [sys.executable, "-c", "from cli.main import main; main()", "serve", "--no-migrate"]


def replica_env(settings: Settings, name: str, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "WORKPOOLS_REDIS_URL": settings.redis_url,
        "WORKPOOLS_DATABASE_URL": settings.database_url,
        "WORKPOOLS_PREFIX": settings.prefix,
        "WORKPOOLS_CONSUMER_NAME": name,
        "WORKPOOLS_HTTP_ENABLED": "false",  # tests that want the HTTP port pass its settings in `extra`
        **extra,
    }


class Replica:
    def __init__(self, settings: Settings, name: str, log_level: str = "WARNING", **extra: str) -> None:
        self.name = name
        self.log = tempfile.NamedTemporaryFile(prefix=f"replica-{name}-", suffix=".log", delete=False)
        self.process = subprocess.Popen(
            [*SERVE, "--log-level", log_level],
            env=replica_env(settings, name, **extra),
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    def kill(self) -> None:
        """SIGKILL: no shutdown hooks, nothing released."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()
        self.log.close()

    def output(self) -> str:
        with open(self.log.name) as handle:
            return handle.read()


async def listening(redis: Redis, channel: str) -> bool:
    """True once a replica is subscribed to the pub/sub `channel` (for `wait_until`): a replica
    answers its request streams before its worker channel is subscribed, and a heartbeat
    published before that is heard by no one."""
    [(_, subscribers)] = await redis.pubsub_numsub(channel)
    return subscribers > 0


async def serving(client: WorkPoolClient, names: set[str]) -> bool:
    """True once every replica in `names` has answered a request (for `wait_until`)."""
    seen = set()
    try:
        for _ in range(20):
            _, _, headers = await client._rpc.exchange(Op.COUNT_WORK_POOLS, {}, timeout=2)
            seen.add(headers["replica"])
    except ServiceUnavailable:
        return False
    return seen >= names


@contextmanager
def replicas(settings: Settings, *names: str, **extra: str) -> Iterator[list[Replica]]:
    started = [Replica(settings, name, **extra) for name in names]
    try:
        yield started
    finally:
        for replica in started:
            replica.stop()
