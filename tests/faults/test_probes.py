"""Health probes of a running `workpools serve` while its Redis or PostgreSQL (throwaway servers
of this test) stops and starts again: /readyz turns 503 naming the failed check and back to 200
without a restart; /healthz stays 200 throughout."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

import migrations
from tests.factories import wait_until
from tests.faults.servers import free_port
from tests.faults.tools import FAST_RECLAIM
from tests.replicas import replicas

pytestmark = pytest.mark.faults


def http_env(port: int) -> dict[str, str]:
    return {**FAST_RECLAIM, "WORKPOOLS_HTTP_ENABLED": "true", "WORKPOOLS_HTTP_PORT": str(port)}


async def probe(url: str, path: str) -> tuple[int, dict[str, Any]]:
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=8)) as session,
            session.get(f"{url}{path}") as response,
        ):
            return response.status, await response.json()
    except (aiohttp.ClientError, TimeoutError):
        return 0, {}


async def answers(url: str, path: str, status: int, **checks: Any) -> dict[str, Any] | None:
    """The probe's body once it answers `status` with these check results (True, or not True)."""
    code, body = await probe(url, path)
    if code != status:
        return None
    for name, passing in checks.items():
        if (body.get("checks", {}).get(name) is True) != passing:
            return None
    return body


async def test_readyz_fails_while_redis_is_down_and_recovers(settings, fault_redis):
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    with replicas(settings, "probed", **http_env(port)) as [replica]:
        await wait_until(lambda: answers(url, "readyz", 200), timeout=30, interval=0.2)
        fault_redis.stop()
        body = await wait_until(lambda: answers(url, "readyz", 503), timeout=20, interval=0.2)
        assert body["status"] == "fail"
        assert body["checks"].get("redis", "starting") is not True
        assert (await probe(url, "healthz"))[0] == 200
        fault_redis.start()
        body = await wait_until(lambda: answers(url, "readyz", 200), timeout=30, interval=0.2)
        assert body["checks"]["consumer_groups"] is True and body["checks"]["subscriptions"] is True
        assert replica.process.poll() is None


async def test_readyz_fails_while_postgres_is_down_and_recovers(settings, fault_postgres):
    db_url = fault_postgres.url("workpools")
    await migrations.upgrade(db_url)
    settings = settings.model_copy(update={"database_url": db_url})
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    with replicas(settings, "probed", **http_env(port)) as [replica]:
        body = await wait_until(lambda: answers(url, "readyz", 200), timeout=30, interval=0.2)
        assert body["checks"]["postgres"] is True and body["checks"]["migrations"] is True
        fault_postgres.stop()
        body = await wait_until(lambda: answers(url, "readyz", 503, postgres=False, redis=True), timeout=20)
        assert body["checks"]["migrations"] == "postgres unreachable"
        assert (await probe(url, "healthz"))[0] == 200
        fault_postgres.start()
        await wait_until(lambda: answers(url, "readyz", 200), timeout=30, interval=0.2)
        assert replica.process.poll() is None
