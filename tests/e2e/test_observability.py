"""Metrics, the status snapshot and the HTTP port of a replica running in the test's event loop,
against real Redis and PostgreSQL: the numbers move when runs are dispatched."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from client import WorkerClient, WorkPoolClient
from observability.logs import JsonFormatter, request_ids
from observability.replica import Observability
from replica.app import build_app
from schemas.channels import Channels, Op
from tests.factories import make_pool, wait_until

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(url: str, **headers: str) -> Samples:
    async with aiohttp.ClientSession() as session, session.get(f"{url}metrics", headers=headers) as response:
        assert response.status == 200, await response.text()
        text = await response.text()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


@pytest.fixture
def observed_settings(settings):
    return settings.model_copy(update={"http_port": 0, "status_seconds": 0.2, "late_after_seconds": 15.0})


@pytest.fixture
async def replica(observed_settings, db, redis) -> AsyncIterator[Observability]:
    """One replica with its HTTP port on a free port; yields its observability (`.port.url`)."""
    observability = Observability(observed_settings)
    app = build_app(observed_settings, db=db, observability=observability)
    async with app:
        assert await observability.start_http()
        try:
            yield observability
        finally:
            await observability.stop_http()


@pytest.fixture
async def pools(replica, observed_settings) -> AsyncIterator[WorkPoolClient]:
    async with WorkPoolClient(observed_settings.redis_url, observed_settings.prefix, timeout=10) as client:
        yield client


async def test_metrics_parse_and_move_when_runs_are_dispatched(replica, pools, observed_settings):
    url = replica.port.url
    pool = (await pools.create_work_pool(make_pool())).name
    deployment = await pools.create_deployment({"name": "d", "work_pool_name": pool})
    due = datetime.now(UTC) - timedelta(seconds=60)
    runs = [
        await pools.create_flow_run({"deployment_id": deployment.id, "next_scheduled_start_time": due.isoformat()})
        for _ in range(3)
    ]

    async def snapshot_shows(**expected: float) -> Samples | None:
        samples = await scrape(url)
        labels = {"pool": pool, "queue": "default"}
        found = {name: value(samples, f"workpools_queue_{name}", **labels) for name in expected}
        return samples if found == expected else None

    # The foreman's snapshot: three runs due, all late (due 60 s ago, late after 15 s).
    await wait_until(lambda: snapshot_shows(runs_due=3, runs_late=3), timeout=10, interval=0.1)

    handed = await pools.get_scheduled_flow_runs_for_work_pool(pool, limit=10)
    assert len(handed) == 3
    accepted = await pools.set_flow_run_state(runs[0].id, {"type": "PENDING"})
    assert accepted.status == "ACCEPT"
    await pools.set_flow_run_state(runs[0].id, {"type": "RUNNING"})
    with pytest.raises(Exception, match="not found"):
        await pools.read_work_pool("no-such-pool")

    samples = await wait_until(lambda: snapshot_shows(runs_due=2, runs_late=2, slots_used=1), timeout=10, interval=0.1)
    poll = {"pool": pool, "mode": "poll"}
    assert value(samples, "workpools_runs_handed_total", **poll) == 3
    assert value(samples, "workpools_dispatch_latency_seconds_count", **poll) == 3
    assert value(samples, "workpools_dispatch_latency_seconds_bucket", le="30.0", **poll) == 0  # waited ≥ 60 s
    assert value(samples, "workpools_dispatch_latency_seconds_bucket", le="300.0", **poll) == 3
    assert value(samples, "workpools_start_latency_seconds_count", pool=pool) == 1
    assert value(samples, "workpools_requests_total", op="create_flow_run", status="201") == 3
    assert value(samples, "workpools_requests_total", op="get_scheduled_flow_runs", status="200") == 1
    assert value(samples, "workpools_requests_total", op="set_flow_run_state", status="201") == 2
    assert value(samples, "workpools_requests_total", op="read_work_pool", status="404") == 1
    assert value(samples, "workpools_request_duration_seconds_count", op="create_flow_run") == 3
    assert value(samples, "workpools_pool_slots_used", pool=pool) == 1
    assert value(samples, "workpools_pool_ready", pool=pool) == 0  # no worker yet
    assert value(samples, "workpools_status_computed_by", replica=observed_settings.consumer_name) == 1
    assert value(samples, "workpools_foreman_holder") == 1
    # FastStream's message metrics of a request stream, kept by the request gate
    stream = {
        "app_name": "workpools",
        "broker": "redis",
        "handler": Channels(observed_settings.prefix).rpc(Op.CREATE_FLOW_RUN),
    }
    assert value(samples, "faststream_received_messages_total", **stream) == 3
    assert value(samples, "faststream_received_processed_messages_total", status="acked", **stream) == 3
    assert value(samples, "faststream_received_processed_messages_duration_seconds_count", **stream) == 3
    assert value(samples, "faststream_received_messages_size_bytes_count", **stream) == 3
    assert value(samples, "faststream_received_messages_in_process", **stream) == 0


async def test_claims_heartbeats_and_leases_show_in_metrics(replica, pools, observed_settings):
    url = replica.port.url
    pool = (await pools.create_work_pool(make_pool())).name
    deployment = await pools.create_deployment({"name": "d", "work_pool_name": pool})
    run = await pools.create_flow_run({"deployment_id": deployment.id})
    async with WorkerClient(
        observed_settings.redis_url, observed_settings.prefix, work_pool_name=pool, worker_name="w-1"
    ) as worker:
        await worker.heartbeat(ack=True)
        [claimed] = await worker.get_scheduled_flow_runs(limit=5, claim=True)
        assert claimed.flow_run.id == run.id

        async def leased() -> Samples | None:
            samples = await scrape(url)
            held = value(samples, "workpools_leases_held", pool=pool)
            online = value(samples, "workpools_workers", pool=pool, status="ONLINE")
            return samples if (held, online) == (1, 1) else None

        samples = await wait_until(leased, timeout=10, interval=0.1)
        assert value(samples, "workpools_runs_handed_total", pool=pool, mode="claim") == 1
        assert value(samples, "workpools_heartbeats_total", outcome="received") == 1
        assert value(samples, "workpools_heartbeats_total", outcome="recorded") == 1
        polls = {"app_name": "workpools", "broker": "redis", "handler": Channels(observed_settings.prefix).worker_polls}
        assert value(samples, "faststream_received_messages_total", **polls) == 1  # the claim, a worker message
        assert value(samples, "workpools_pool_ready", pool=pool) == 1

        given_back = await pools.set_flow_run_state(
            run.id, {"type": "SCHEDULED", "name": "Rescheduled"}, lease_token=claimed.lease.token
        )
        assert given_back.status == "ACCEPT"
    samples = await scrape(url)
    assert value(samples, "workpools_leases_ended_total", reason="given_back") == 1
    assert value(samples, "workpools_leases_ended_total", reason="expired") == 0


async def test_probes_page_and_status_json(replica, pools):
    url = replica.port.url
    pool = (await pools.create_work_pool(make_pool())).name
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{url}healthz") as response:
            assert response.status == 200
            assert (await response.json())["status"] == "ok"
        async with session.get(f"{url}readyz") as response:
            body = await response.json()
            assert response.status == 200, body
            assert body["checks"] == {
                "replica": True,
                "redis": True,
                "postgres": True,
                "migrations": True,
                "consumer_groups": True,
                "subscriptions": True,
            }
        async with session.get(url) as response:
            assert response.status == 200
            page = await response.text()
            assert '<script src="/page/app.js"' in page
            assert 'src="http' not in page and 'href="http' not in page  # nothing from elsewhere
            assert response.headers["Content-Security-Policy"].startswith("default-src 'self'")

        async def status() -> dict | None:
            async with session.get(f"{url}api/status") as response:
                body = await response.json()
            snapshot = body.get("snapshot") or {}
            return body if [p["name"] for p in snapshot.get("pools", [])] == [pool] else None

        body = await wait_until(status, timeout=10, interval=0.1)
        assert {"event": "prefect.work-pool.created", "resource": pool} in [
            {"event": e["event"], "resource": e["resource"]} for e in body["events"]
        ]
        [listed] = body["snapshot"]["pools"]
        assert listed["queues"][0]["name"] == "default" and listed["status"] == "NOT_READY"


async def test_a_token_guards_page_and_metrics_but_not_probes(observed_settings, db, redis):
    settings = observed_settings.model_copy(update={"http_token": "s3cret-token"})
    observability = Observability(settings)
    app = build_app(settings, db=db, observability=observability)
    async with app:
        url = await observability.start_http()
        try:
            async with aiohttp.ClientSession() as session:
                for path in ("metrics", "", "api/status"):
                    async with session.get(f"{url}{path}") as response:
                        assert response.status == 401, path
                async with session.get(f"{url}healthz") as response:
                    assert response.status == 200
                async with session.get(f"{url}api/status?token=s3cret-token") as response:
                    assert response.status == 200
            samples = await scrape(url, Authorization="Bearer s3cret-token")
            assert value(samples, "workpools_replica_info", replica=settings.consumer_name) == 1
        finally:
            await observability.stop_http()
    assert "s3cret-token" not in repr(settings)


def test_json_log_lines_carry_the_request_ids_and_errors():
    formatter = JsonFormatter("rep-1")
    token = request_ids.set({"operation": "create_flow_run", "correlation_id": "c-1", "request_id": "r-1"})
    try:
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            record = logging.getLogger("workpools").makeRecord(
                "workpools", logging.ERROR, __file__, 1, "unexpected error", (), sys.exc_info()
            )
        line = json.loads(formatter.format(record))
    finally:
        request_ids.reset(token)
    assert line["operation"] == "create_flow_run"
    assert (line["correlation_id"], line["request_id"], line["replica"]) == ("c-1", "r-1", "rep-1")
    assert line["level"] == "ERROR" and line["error"] == "RuntimeError" and "boom" in line["traceback"]


def test_without_the_http_port_no_metrics_are_collected(settings):
    off = Observability(settings.model_copy(update={"http_enabled": False}))
    on = Observability(settings)
    assert (off.collecting, off.message_middlewares()) == (False, [])
    assert off.request_recorder().metrics is None  # log lines only
    assert on.collecting and len(on.message_middlewares()) == 1 and on.request_recorder().metrics is on.metrics
