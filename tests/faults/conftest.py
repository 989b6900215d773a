"""Fixtures of the fault suite: tests that crash, restart or lock down Redis and PostgreSQL do
it to throwaway servers of their own (`tests/faults/servers.py`), never to the shared ones.

`fault_redis` is a fresh `redis-server` per test, and the test's `settings` and `redis` point at
it; `fault_postgres` is a fresh cluster per test. Both are torn down at the end of the test.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import AsyncIterator, Iterator

import pytest
from redis.asyncio import Redis

from schemas.settings import Settings
from tests.faults.servers import Certificate, PostgresServer, RedisServer, postgres_server, redis_server


@pytest.fixture
def fault_redis() -> Iterator[RedisServer]:
    with redis_server() as server:
        yield server


@pytest.fixture
def fault_postgres() -> Iterator[PostgresServer]:
    with postgres_server() as server:
        yield server


@pytest.fixture(scope="session")
def certificate(tmp_path_factory) -> Certificate:
    """A self-signed certificate for 127.0.0.1, made with the machine's `openssl`."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl not found")
    root = tmp_path_factory.mktemp("tls")
    cert, key = root / "server.pem", root / "server.key"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1,DNS:localhost",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return Certificate(cert, key)


@pytest.fixture
def settings(settings: Settings, fault_redis: RedisServer) -> Settings:
    """The test's settings, on its throwaway Redis (PostgreSQL: the session's test database)."""
    return settings.model_copy(update={"redis_url": fault_redis.url()})


@pytest.fixture
async def redis(fault_redis: RedisServer) -> AsyncIterator[Redis]:
    """A client of the test's throwaway Redis."""
    client = Redis.from_url(fault_redis.url())
    yield client
    await client.aclose()
