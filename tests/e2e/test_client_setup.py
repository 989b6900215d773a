"""How a `WorkPoolClient` starts and checks its arguments: where it connects when not told; how
it fails at once when it was not opened, when Redis cannot be reached, or when an argument has
the wrong type (InvalidRequest naming it, nothing sent)."""

from __future__ import annotations

import socket
import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from client import ClientNotOpen, InvalidRequest, RedisUnreachable, WorkPoolClient


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


@pytest.mark.parametrize(
    ("call", "where"),
    [
        (lambda c: c.get_scheduled_flow_runs_for_work_pool("etl", scheduled_before="tomorrow"), "scheduled_before"),
        (lambda c: c.get_scheduled_flow_runs_for_work_pool("etl", limit="ten"), "limit"),
        (lambda c: c.preview_scheduled_flow_runs("etl", work_queue_names="urgent"), "work_queue_names"),
        (lambda c: c.read_work_pool(42), "name"),
        (lambda c: c.read_flow_run("not-a-uuid"), "flow_run_id"),
        (lambda c: c.read_deployment(3.5), "deployment_id"),
        (lambda c: c.set_flow_run_state(uuid.uuid4(), {"type": "PENDING"}, lease_token="abc"), "lease_token"),
        (lambda c: c.read_work_queues("etl", offset=-1), "offset"),
        (lambda c: c.send_worker_heartbeat("etl", ["w"]), "name"),
        (lambda c: c.read_flow_runs(limit=object()), "limit"),
    ],
)
async def test_a_wrong_argument_type_raises_invalid_request_naming_it_before_sending(call, where):
    """Nothing is sent (no replica serves this prefix: a request would wait its whole timeout)."""
    async with WorkPoolClient("redis://127.0.0.1:6379/0", f"nobody-{uuid.uuid4().hex[:6]}", timeout=30) as client:
        started = time.monotonic()
        with pytest.raises(InvalidRequest) as invalid:
            await call(client)
    assert time.monotonic() - started < 0.5
    assert invalid.value.status == 422
    assert where in {str(part) for error in invalid.value.detail for part in error["loc"]}, invalid.value.detail


async def test_arguments_of_the_right_type_are_sent_as_the_service_reads_them(client):
    pool = await client.create_work_pool({"name": "typed", "type": "process"})
    run = await client.create_flow_run({"work_pool_name": "typed", "name": "r"})
    assert (await client.read_flow_run(run.id)).name == "r"  # a UUID
    assert (await client.read_flow_run(str(run.id))).name == "r"  # or its text
    later = datetime.now(UTC) + timedelta(hours=1)
    [due] = await client.get_scheduled_flow_runs_for_work_pool("typed", scheduled_before=later)
    assert (due.flow_run.id, due.work_pool_id) == (run.id, pool.id)
    assert [r.id for r in await client.preview_scheduled_flow_runs("typed", scheduled_before=later)] == [run.id]
