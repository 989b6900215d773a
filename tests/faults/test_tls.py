"""TLS through the URLs alone: `rediss://…?ssl_ca_certs=…` and `postgresql+asyncpg://…?sslmode=require`
(or asyncpg's own `?ssl=require`), against a Redis and a PostgreSQL that accept nothing but TLS."""

from __future__ import annotations

import pytest

import migrations
from client import ServiceUnavailable, WorkPoolClient
from services.errors import Unavailable
from tests.factories import make_pool, wait_until
from tests.faults.servers import postgres_server, redis_server
from tests.replicas import replicas, serving

pytestmark = pytest.mark.faults


async def test_a_replica_and_a_client_work_over_tls_set_in_the_urls(settings, certificate):
    with redis_server(certificate) as redis_tls, postgres_server(certificate) as postgres_tls:
        with pytest.raises(Unavailable):  # the server takes TLS only: a plain connection is refused
            await migrations.upgrade(postgres_tls.url("workpools", query="?ssl=disable"))
        await migrations.upgrade(postgres_tls.url("workpools", query="?ssl=require"))
        database_url = postgres_tls.url("workpools", query="?sslmode=require")  # libpq's name works too
        await migrations.upgrade(database_url)
        settings = settings.model_copy(update={"redis_url": redis_tls.url(), "database_url": database_url})
        with replicas(settings, "rep-tls"):
            async with WorkPoolClient(redis_tls.url(), settings.prefix, timeout=10) as client:
                await wait_until(lambda: serving(client, {"rep-tls"}), timeout=30, interval=0.2)
                await client.create_work_pool(make_pool(name="over-tls"))
                assert (await client.read_work_pool("over-tls")).name == "over-tls"
        with pytest.raises(ServiceUnavailable):  # and Redis too
            async with WorkPoolClient(f"redis://127.0.0.1:{redis_tls.port}/0", settings.prefix, timeout=2):
                pass
