"""How a `WorkPoolClient` starts: where it connects when not told, and how it fails at once when
it was not opened or Redis cannot be reached."""

from __future__ import annotations

import socket
import time

import pytest

from client import ClientNotOpen, RedisUnreachable, WorkPoolClient


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def test_a_client_not_opened_raises_at_once():
    client = WorkPoolClient("redis://127.0.0.1:6379/0", "nobody", timeout=30)
    started = time.monotonic()
    with pytest.raises(ClientNotOpen) as not_open:
        await client.read_work_pool("etl")
    with pytest.raises(ClientNotOpen):
        await client.read_events()
    assert time.monotonic() - started < 0.5
    assert str(not_open.value) == (
        "WorkPoolClient is not open: use it as `async with WorkPoolClient(...) as client:` "
        "(or await its __aenter__()) before sending requests."
    )


async def test_a_closed_client_raises_at_once(service, settings):
    async with WorkPoolClient(settings.redis_url, settings.prefix, timeout=30) as client:
        assert await client.count_work_pools() == 0
    started = time.monotonic()
    with pytest.raises(ClientNotOpen):
        await client.count_work_pools()
    assert time.monotonic() - started < 0.5


async def test_opening_with_redis_down_raises_at_once_in_one_line():
    port = closed_port()
    started = time.monotonic()
    with pytest.raises(RedisUnreachable) as down:
        async with WorkPoolClient(f"redis://127.0.0.1:{port}/0", "nobody", timeout=30):
            pass
    assert time.monotonic() - started < 3
    assert down.value.status == 503
    assert str(down.value.detail).startswith(f"Redis at redis://127.0.0.1:{port}/0 is not reachable: ")
    assert "\n" not in str(down.value.detail)


async def test_the_client_reads_the_service_variables_when_not_told(service, settings, monkeypatch):
    monkeypatch.setenv("WORKPOOLS_REDIS_URL", settings.redis_url)
    monkeypatch.setenv("WORKPOOLS_PREFIX", settings.prefix)
    async with WorkPoolClient(timeout=10) as client:
        await client.create_work_pool({"name": "from-env", "type": "process"})
    async with WorkPoolClient(settings.redis_url, settings.prefix, timeout=10) as told:
        assert (await told.read_work_pool("from-env")).type == "process"
    monkeypatch.setenv("WORKPOOLS_PREFIX", "elsewhere")
    assert WorkPoolClient()._rpc.channels.prefix == "elsewhere"
    assert WorkPoolClient(prefix="given")._rpc.channels.prefix == "given"
