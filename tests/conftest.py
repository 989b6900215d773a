"""Real Redis and PostgreSQL for every test.

`WORKPOOLS_TEST_REDIS_URL` / `WORKPOOLS_TEST_DATABASE_URL` name running servers (CI sets them);
otherwise testcontainers starts both. Each test gets its own key prefix and clean tables.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.engine import make_url

import migrations
from client import WorkPoolClient
from replica.app import build_app
from schemas.settings import Settings
from services.db import Database, DbTimeouts
from services.tables import metadata
from tests.factories import Clock


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    url = os.environ.get("WORKPOOLS_TEST_REDIS_URL")
    if url:
        yield url
        return
    from testcontainers.redis import RedisContainer

    with RedisContainer("redis:7") as container:
        yield f"redis://{container.get_container_host_ip()}:{container.get_exposed_port(6379)}/0"


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    """A fresh, migrated database for this test session."""
    base = os.environ.get("WORKPOOLS_TEST_DATABASE_URL")
    container = None
    if not base:
        from testcontainers.postgres import PostgresContainer

        container = PostgresContainer("postgres:15", driver="asyncpg").start()
        base = container.get_connection_url()
    url = make_url(base).set(database=f"workpools_test_{uuid.uuid4().hex[:8]}")
    rendered = url.render_as_string(hide_password=False)
    asyncio.run(migrations.upgrade(rendered))
    yield rendered
    asyncio.run(_drop_database(url))
    if container is not None:
        container.stop()


@pytest.fixture
async def empty_database_url(database_url: str) -> AsyncIterator[str]:
    """A database of its own for one test, not migrated (`migrations.upgrade` creates it), dropped
    at the end: for tests of the migrations themselves."""
    url = make_url(database_url).set(database=f"workpools_test_{uuid.uuid4().hex[:8]}")
    yield url.render_as_string(hide_password=False)
    await _drop_database(url)


async def _drop_database(url) -> None:
    import asyncpg

    admin = url.set(database="postgres", drivername="postgresql").render_as_string(hide_password=False)
    conn = await asyncpg.connect(admin)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{url.database}" WITH (FORCE)')
    finally:
        await conn.close()


@pytest.fixture
def prefix() -> str:
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def db_timeouts() -> DbTimeouts:
    """The database timeouts of the test's replica (a module holding locks longer overrides it)."""
    return DbTimeouts()


@pytest.fixture
async def db(database_url: str, clock: Clock, db_timeouts: DbTimeouts) -> AsyncIterator[Database]:
    database = Database(database_url, clock=clock, timeouts=db_timeouts)
    tables = ", ".join(t.name for t in metadata.sorted_tables)
    async with database.engine.begin() as conn:
        await conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    yield database
    await database.dispose()


@pytest.fixture
async def redis(redis_url: str, prefix: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    yield client
    keys = [key async for key in client.scan_iter(match=f"{prefix}.*", count=1000)]
    if keys:
        await client.delete(*keys)
    await client.aclose()


@pytest.fixture
def settings(redis_url: str, database_url: str, prefix: str) -> Settings:
    return Settings(
        redis_url=redis_url,
        database_url=database_url,
        prefix=prefix,
        consumer_name=f"test-{uuid.uuid4().hex[:6]}",
        outbox_sweep_seconds=0.2,
        outbox_grace_seconds=2.0,
    )


@pytest.fixture
async def service(settings: Settings, db: Database, redis: Redis) -> AsyncIterator[Database]:
    """One replica running in this test's event loop; yields its database (with the test clock)."""
    app = build_app(settings, db=db)
    async with app:
        yield db


@pytest.fixture
async def client(service: Database, settings: Settings) -> AsyncIterator[WorkPoolClient]:
    async with WorkPoolClient(redis_url=settings.redis_url, prefix=settings.prefix, timeout=10) as c:
        yield c
