"""`WORKPOOLS_LOG_FORMAT=json`: a running `workpools serve` writes one JSON object per line, a
request's line carries its operation, ids, replica, status and duration, and no line holds the
database password."""

from __future__ import annotations

import json

from sqlalchemy.engine import make_url

from client import WorkPoolClient
from schemas.channels import Op
from tests.factories import make_pool, wait_until
from tests.replicas import replicas, serving

PASSWORD = "pw-never-logged-7731"  # the test PostgreSQL trusts local connections: any password works


async def test_json_log_lines_carry_ids_and_never_the_password(settings):
    url = make_url(settings.database_url).set(password=PASSWORD).render_as_string(hide_password=False)
    settings = settings.model_copy(update={"database_url": url})
    with replicas(settings, "json-replica", log_level="DEBUG", WORKPOOLS_LOG_FORMAT="json") as [replica]:
        async with WorkPoolClient(settings.redis_url, settings.prefix, timeout=10) as client:
            await wait_until(lambda: serving(client, {"json-replica"}), timeout=30, interval=0.2)
            status, _, headers = await client._rpc.exchange(
                Op.CREATE_WORK_POOL, make_pool(name="logged"), request_id="req-json-1"
            )
            assert status == 201
            missing, _, _ = await client._rpc.exchange(Op.READ_WORK_POOL, {"name": "nope"})
            assert missing == 404

            def request_line() -> dict | None:
                for line in replica.output().splitlines():
                    entry = json.loads(line)
                    if entry.get("request_id") == "req-json-1" and "status" in entry:
                        return entry
                return None

            def read_and_serving_lines() -> bool:
                """The 404's line, and the replica's own line saying it serves: the latter is
                logged once its start has returned, which can be after it answered requests."""
                lines = [json.loads(line) for line in replica.output().splitlines()]
                read = any(line.get("operation") == "read_work_pool" and line.get("status") == "404" for line in lines)
                up = any(line["message"].startswith("status page:") or "serving" in line["message"] for line in lines)
                return read and up

            entry = await wait_until(request_line, timeout=10, interval=0.1)
            await wait_until(read_and_serving_lines, timeout=10, interval=0.1)
        output = replica.output()
    lines = [json.loads(line) for line in output.splitlines()]  # every line is one JSON object
    assert entry["operation"] == "create_work_pool"
    assert entry["correlation_id"] == headers["correlation_id"]
    assert (entry["replica"], entry["status"], entry["logger"]) == ("json-replica", "201", "workpools.requests")
    assert isinstance(entry["duration_ms"], float) and entry["duration_ms"] > 0
    assert any(line.get("operation") == "read_work_pool" and line.get("status") == "404" for line in lines)
    assert any(line["message"].startswith("status page:") or "serving" in line["message"] for line in lines)
    assert PASSWORD not in output
