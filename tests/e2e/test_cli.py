"""The `workpools` command against a real replica: one `workpools serve` process per module on
real Redis and PostgreSQL (the commands call `asyncio.run`, so the replica cannot run in the
test's event loop). Every command is checked as a table and as JSON."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote
from uuid import UUID

from redis import Redis

from client import WorkPoolClient
from replica.asyncapi import CONSUMER_PLACEHOLDER, ERROR_STATUSES
from schemas.channels import Channels, Op
from schemas.operations import OPERATIONS
from schemas.settings import Settings
from tests.cli import as_json, as_jsonl, command_env, row, rows, workpools
from tests.factories import unique

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = {
    "job_configuration": {"command": "{{ command }}", "env": "{{ env }}"},
    "variables": {
        "properties": {
            "command": {"type": "string", "default": "echo hi"},
            "env": {"type": "object", "default": {}},
        }
    },
}


def with_client(settings: Settings, request: Callable[[WorkPoolClient], Awaitable[Any]]) -> Any:
    async def run() -> Any:
        async with WorkPoolClient(settings.redis_url, settings.prefix, timeout=10) as client:
            return await request(client)

    return asyncio.run(run())


def test_work_pool_commands_as_tables(cli_env):
    name = unique("pool[bold]")  # printed as is, not read as Rich markup

    created = workpools(
        cli_env,
        "work-pool",
        "create",
        name,
        "--type",
        "process",
        "--concurrency-limit",
        "3",
        "--description",
        "made by the CLI test",
    )
    assert f'Created work pool "{name}".' in created.stdout
    assert row(workpools(cli_env, "pool", "ls").stdout, name) == [name, "process", "NOT_READY", "3"]

    fields = {cells[0]: cells[1] for cells in rows(workpools(cli_env, "pool", "inspect", name).stdout) if cells[0]}
    assert UUID(fields["id"]) and UUID(fields["default_queue_id"])
    assert (fields["name"], fields["type"], fields["description"]) == (name, "process", "made by the CLI test")
    assert (fields["is_paused"], fields["concurrency_limit"], fields["status"]) == ("False", "3", "NOT_READY")

    assert workpools(cli_env, "pool", "pause", name).stdout.strip() == f'Paused work pool "{name}".'
    assert row(workpools(cli_env, "pool", "ls").stdout, name)[2] == "PAUSED"
    workpools(cli_env, "pool", "resume", name)
    assert row(workpools(cli_env, "pool", "ls").stdout, name)[2] == "NOT_READY"

    assert workpools(cli_env, "pool", "delete", name).stdout.strip() == f'Deleted work pool "{name}".'
    assert row(workpools(cli_env, "pool", "ls").stdout, name) is None


def test_work_pool_commands_as_json(cli_env, tmp_path):
    name = unique("pool")
    template = tmp_path / "template.json"
    template.write_text(json.dumps(TEMPLATE))

    created = as_json(
        workpools(
            cli_env, "work-pool", "create", name, "-t", "process", "--base-job-template", str(template), "-o", "json"
        )
    )
    assert (created["name"], created["type"], created["base_job_template"]) == (name, "process", TEMPLATE)
    assert created["status"] == "NOT_READY" and UUID(created["id"])

    workpools(cli_env, "work-pool", "set-concurrency-limit", name, "5")
    assert as_json(workpools(cli_env, "work-pool", "inspect", name, "-o", "json"))["concurrency_limit"] == 5
    workpools(cli_env, "work-pool", "clear-concurrency-limit", name)
    assert as_json(workpools(cli_env, "work-pool", "inspect", name, "-o", "json"))["concurrency_limit"] is None

    changed = {
        "job_configuration": {"command": "{{ command }}"},
        "variables": {"properties": {"command": {"type": "string"}}},
    }
    yaml_template = tmp_path / "changed.yaml"
    yaml_template.write_text(json.dumps(changed))  # JSON is YAML
    updated = workpools(
        cli_env,
        "work-pool",
        "update",
        name,
        "--base-job-template",
        str(yaml_template),
        "--description",
        "now",
        "--concurrency-limit",
        "2",
    )
    assert updated.stdout.strip() == f'Updated work pool "{name}".'
    pool = as_json(workpools(cli_env, "work-pool", "inspect", name, "-o", "json"))
    assert (pool["base_job_template"], pool["description"], pool["concurrency_limit"]) == (changed, "now", 2)

    workpools(cli_env, "work-pool", "pause", name)
    listed = {p["name"]: p for p in as_jsonl(workpools(cli_env, "work-pool", "ls", "-o", "jsonl"))}
    assert (listed[name]["is_paused"], listed[name]["status"]) == (True, "PAUSED")
    assert name in {p["name"] for p in as_json(workpools(cli_env, "pool", "ls", "-o", "json"))}

    workpools(cli_env, "work-pool", "delete", name)
    assert name not in {p["name"] for p in as_json(workpools(cli_env, "pool", "ls", "-o", "json"))}


def test_work_queue_commands(cli_env):
    pool = unique("pool")
    workpools(cli_env, "work-pool", "create", pool, "--type", "process")

    created = workpools(
        cli_env, "work-queue", "create", "urgent", "--pool", pool, "--priority", "1", "--concurrency-limit", "2"
    )
    assert f'Created work queue "urgent" in pool "{pool}".' in created.stdout
    later = as_json(workpools(cli_env, "queue", "create", "later", "-p", pool, "--paused", "-o", "json"))
    assert (later["name"], later["work_pool_name"], later["priority"], later["status"]) == ("later", pool, 3, "PAUSED")

    table = workpools(cli_env, "queue", "ls", "--pool", pool).stdout
    assert [cells[0] for cells in rows(table)] == ["urgent", "default", "later"]
    assert row(table, "urgent") == ["urgent", pool, "1", "NOT_READY", "2", "never"]
    everywhere = as_json(workpools(cli_env, "work-queue", "ls", "-o", "json"))
    assert [q["name"] for q in everywhere if q["work_pool_name"] == pool] == ["urgent", "default", "later"]

    workpools(cli_env, "work-queue", "resume", "later", "-p", pool)
    workpools(cli_env, "work-queue", "set-concurrency-limit", "later", "4", "-p", pool)
    workpools(
        cli_env, "work-queue", "update", "later", "-p", pool, "--name", "soon", "--priority", "2", "--description", "d"
    )
    soon = as_json(workpools(cli_env, "work-queue", "inspect", "soon", "-p", pool, "-o", "json"))
    assert (soon["priority"], soon["concurrency_limit"], soon["is_paused"], soon["description"]) == (2, 4, False, "d")
    workpools(cli_env, "work-queue", "clear-concurrency-limit", "soon", "-p", pool)
    workpools(cli_env, "work-queue", "pause", "soon", "-p", pool)
    soon = as_json(workpools(cli_env, "work-queue", "inspect", "soon", "-p", pool, "-o", "json"))
    assert (soon["concurrency_limit"], soon["status"]) == (None, "PAUSED")

    assert workpools(cli_env, "work-queue", "delete", "soon", "-p", pool).stdout.strip() == (
        f'Deleted work queue "soon" in pool "{pool}".'
    )
    assert [q["name"] for q in as_json(workpools(cli_env, "queue", "ls", "-p", pool, "-o", "json"))] == [
        "urgent",
        "default",
    ]
    refused = workpools(cli_env, "work-queue", "delete", "default", "-p", pool, exit_code=1)
    assert refused.stderr.strip() == "Can't delete a pool's default queue."


def test_worker_commands(cli_env):
    pool = unique("pool")
    workpools(cli_env, "work-pool", "create", pool, "--type", "process")
    assert f'No workers in pool "{pool}".' in workpools(cli_env, "worker", "ls", "--pool", pool).stdout
    assert as_json(workpools(cli_env, "worker", "ls", "--pool", pool, "-o", "json")) == []

    workpools(cli_env, "worker", "heartbeat", "worker-1", "--pool", pool, "--heartbeat-interval", "30")
    worker = row(workpools(cli_env, "worker", "ls", "-p", pool).stdout, "worker-1")
    assert worker is not None and (worker[1], worker[3]) == ("ONLINE", "30")
    [listed] = as_json(workpools(cli_env, "worker", "ls", "-p", pool, "-o", "json"))
    assert (listed["name"], listed["status"], listed["heartbeat_interval_seconds"]) == ("worker-1", "ONLINE", 30)
    assert as_json(workpools(cli_env, "pool", "inspect", pool, "-o", "json"))["status"] == "READY"

    deleted = workpools(cli_env, "worker", "delete", "worker-1", "--pool", pool)
    assert deleted.stdout.strip() == f'Deleted worker "worker-1" of pool "{pool}".'
    assert as_json(workpools(cli_env, "worker", "ls", "-p", pool, "-o", "json")) == []
    assert workpools(cli_env, "worker", "delete", "worker-1", "-p", pool, exit_code=1).stderr.strip()


def test_deployment_and_flow_run_commands(cli_env):
    pool = unique("pool")
    workpools(cli_env, "work-pool", "create", pool, "--type", "process")
    workpools(cli_env, "work-queue", "create", "fast", "--pool", pool)

    deployment = as_json(
        workpools(
            cli_env,
            "deployment",
            "create",
            "nightly",
            "--pool",
            pool,
            "--queue",
            "fast",
            "-jv",
            "command=sh -c 'echo $WHO'",
            "-jv",
            'env={"WHO": "me"}',
            "-o",
            "json",
        )
    )
    assert (deployment["name"], deployment["work_pool_name"], deployment["work_queue_name"]) == (
        "nightly",
        pool,
        "fast",
    )
    assert deployment["job_variables"] == {"command": "sh -c 'echo $WHO'", "env": {"WHO": "me"}}
    inspected = as_json(workpools(cli_env, "deployment", "inspect", deployment["id"], "-o", "json"))
    assert inspected == deployment

    run = as_json(
        workpools(
            cli_env,
            "flow-run",
            "create",
            "--deployment",
            deployment["id"],
            "--name",
            "first",
            "-jv",
            'env={"WHO": "run"}',
            "--param",
            "n=3",
            "--tag",
            "cli",
            "-o",
            "json",
        )
    )
    assert (run["name"], run["deployment_id"], run["work_queue_name"], run["state_type"]) == (
        "first",
        deployment["id"],
        "fast",
        "SCHEDULED",
    )
    assert (run["parameters"], run["tags"], run["job_variables"]) == ({"n": 3}, ["cli"], {"env": {"WHO": "run"}})
    assert as_json(workpools(cli_env, "flow-run", "inspect", run["id"], "-o", "json"))["state"]["type"] == "SCHEDULED"

    direct = as_json(workpools(cli_env, "flow-run", "create", "--pool", pool, "--start-in", "3600", "-o", "json"))
    assert direct["work_queue_name"] == "default" and direct["state_type"] == "SCHEDULED"

    accepted = as_json(workpools(cli_env, "flow-run", "set-state", run["id"], "pending", "-o", "json"))
    assert (accepted["status"], accepted["state"]["type"]) == ("ACCEPT", "PENDING")
    again = workpools(cli_env, "flow-run", "set-state", run["id"], "PENDING", "-o", "json", exit_code=1)
    assert as_json(again)["status"] == "ABORT"
    assert as_json(workpools(cli_env, "flow-run", "inspect", run["id"], "-o", "json"))["state_type"] == "PENDING"


def test_a_refused_request_prints_the_detail_in_red_and_exits_1(cli_env):
    missing = workpools(cli_env, "work-pool", "inspect", "nope", exit_code=1)
    assert missing.stderr.strip() == 'Work pool "nope" not found.'
    assert missing.stdout == "" and "Traceback" not in missing.output
    assert workpools(cli_env, "queue", "ls", "-p", "nope", exit_code=1).stderr.strip() == 'Work pool "nope" not found.'
    missing_json = workpools(cli_env, "work-pool", "inspect", "nope", "-o", "json", exit_code=1)
    assert missing_json.stdout == ""

    name = unique("pool")
    workpools(cli_env, "pool", "create", name)
    assert "already exists" in workpools(cli_env, "pool", "create", name, exit_code=1).stderr
    invalid = workpools(cli_env, "pool", "create", "a/b", exit_code=1)
    assert invalid.stderr.startswith("name: String should match pattern")
    unknown = "00000000-0000-0000-0000-000000000000"
    assert workpools(cli_env, "flow-run", "inspect", unknown, exit_code=1).stderr.strip() == "Flow run not found."
    assert workpools(cli_env, "deployment", "inspect", unknown, exit_code=1).stderr.strip() == "Deployment not found."


def test_connection_options_override_the_environment(cli_replica, cli_env):
    settings, _ = cli_replica
    name = unique("pool")
    wrong = {**cli_env, "WORKPOOLS_PREFIX": "nothing-here", "WORKPOOLS_REDIS_URL": "redis://127.0.0.1:1/0"}
    workpools(wrong, "--prefix", settings.prefix, "--redis-url", settings.redis_url, "pool", "create", name)
    listed = workpools(
        wrong, "pool", "ls", "--prefix", settings.prefix, "--redis-url", settings.redis_url, "-o", "json"
    )
    assert name in {p["name"] for p in as_json(listed)}


def resolve(document: dict[str, Any], ref: str) -> Any:
    """What a local `$ref` points at, following references to references."""
    node: Any = document
    for part in ref.removeprefix("#/").split("/"):
        node = node[unquote(part).replace("~1", "/").replace("~0", "~")]  # a URI fragment: `*` is `%2A`
    return resolve(document, node["$ref"]) if isinstance(node, dict) and set(node) == {"$ref"} else node


def refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        if isinstance(node.get("$ref"), str):
            yield node["$ref"]
        for value in node.values():
            yield from refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from refs(value)


def test_docs_asyncapi_documents_every_request_and_its_replies(settings, prefix, tmp_path):
    env = command_env(settings)
    path = tmp_path / "asyncapi.json"
    assert workpools(env, "docs", "asyncapi", "--output", str(path)).stdout.strip() == f"wrote {path}"
    document = json.loads(path.read_text())

    assert document["asyncapi"].startswith("3.")
    for ref in refs(document):
        resolve(document, ref)  # every reference points at something
    for op in Op:
        stream = Channels(prefix).rpc(op)
        assert document["channels"][stream]["address"] == stream
        reply = document["operations"][stream]["reply"]
        assert reply["address"]["location"] == "$message.header#/reply_to"
        success, error = (resolve(document, message["$ref"]) for message in reply["messages"])
        assert success["headers"]["properties"]["status"]["enum"] == [str(OPERATIONS[op].status)]
        assert error["headers"]["properties"]["status"]["enum"] == [str(s) for s in ERROR_STATUSES]
        assert "conflict" in error["headers"]["properties"]["error"]["enum"]
        assert success["payload"] and "detail" in resolve(document, error["payload"]["$ref"])["properties"]

    read_pool = resolve(document, f"#/components/messages/{Channels(prefix).rpc(Op.READ_WORK_POOL)}:Reply")
    assert resolve(document, read_pool["payload"]["$ref"])["title"] == "WorkPool"
    assert document["components"]["messages"][f"{Channels(prefix).rpc(Op.READ_WORK_POOLS)}:Reply"]["payload"] == {
        "type": "array",
        "items": {"$ref": "#/components/schemas/WorkPool"},
    }
    bindings = [channel.get("bindings", {}).get("redis", {}) for channel in document["channels"].values()]
    assert {binding["consumerName"] for binding in bindings if "consumerName" in binding} == {CONSUMER_PLACEHOLDER}


def test_the_committed_asyncapi_document_is_current(tmp_path):
    path = tmp_path / "asyncapi.json"
    defaults = {key: None for key in os.environ if key.startswith("WORKPOOLS_")}
    workpools(defaults, "docs", "asyncapi", "--output", str(path))
    assert path.read_text() == (ROOT / "docs" / "asyncapi.json").read_text(), (
        "docs/asyncapi.json is out of date: run `workpools docs asyncapi` (without WORKPOOLS_* set)"
    )


def test_deployment_and_flow_run_listings(cli_env):
    pool, other = unique("pool"), unique("pool")
    for name in (pool, other):
        workpools(cli_env, "work-pool", "create", name, "--type", "process")
    workpools(cli_env, "work-queue", "create", "fast", "--pool", pool)
    nightly = as_json(workpools(cli_env, "deployment", "create", "nightly", "-p", pool, "-o", "json"))
    hourly = as_json(workpools(cli_env, "deployment", "create", "hourly", "-p", pool, "-q", "fast", "-o", "json"))
    elsewhere = as_json(workpools(cli_env, "deployment", "create", "nightly", "-p", other, "-o", "json"))

    assert [d["id"] for d in as_json(workpools(cli_env, "deployment", "ls", "-p", pool, "-o", "json"))] == [
        hourly["id"],
        nightly["id"],
    ]
    named = as_json(workpools(cli_env, "deployment", "ls", "--name", "nightly", "-o", "json"))
    assert {nightly["id"], elsewhere["id"]} <= {d["id"] for d in named} and hourly["id"] not in {d["id"] for d in named}
    assert [
        d["name"] for d in as_json(workpools(cli_env, "deployment", "ls", "-p", pool, "-q", "fast", "-o", "json"))
    ] == ["hourly"]
    assert row(workpools(cli_env, "deployment", "ls", "-p", pool).stdout, hourly["id"])[1:4] == ["hourly", pool, "fast"]

    first = as_json(workpools(cli_env, "flow-run", "create", "-d", nightly["id"], "--name", "a", "-o", "json"))
    second = as_json(workpools(cli_env, "flow-run", "create", "-d", hourly["id"], "--name", "b", "-o", "json"))
    third = as_json(workpools(cli_env, "flow-run", "create", "-d", elsewhere["id"], "--name", "c", "-o", "json"))
    workpools(cli_env, "flow-run", "set-state", first["id"], "PENDING")

    in_pool = as_json(workpools(cli_env, "flow-run", "ls", "-p", pool, "-o", "json"))
    assert [r["id"] for r in in_pool] == [second["id"], first["id"]]  # newest first
    assert [r["id"] for r in as_json(workpools(cli_env, "flow-run", "ls", "-d", elsewhere["id"], "-o", "json"))] == [
        third["id"]
    ]
    scheduled = as_json(workpools(cli_env, "flow-run", "ls", "-p", pool, "--state", "scheduled", "-o", "json"))
    assert [r["name"] for r in scheduled] == ["b"]
    assert [
        r["name"] for r in as_json(workpools(cli_env, "flow-run", "ls", "-p", pool, "-q", "fast", "-o", "json"))
    ] == ["b"]
    table = workpools(cli_env, "flow-run", "ls", "-p", pool).stdout
    assert row(table, first["id"])[1:4] == ["a", "default", "Pending"]
    assert workpools(cli_env, "flow-run", "ls", "-p", unique("none")).stdout.strip() == "No flow runs."


def test_preview_shows_the_waiting_runs_in_hand_out_order_without_polling(cli_settings, cli_env):
    pool = unique("pool")
    workpools(cli_env, "work-pool", "create", pool, "--type", "process")
    workpools(cli_env, "work-queue", "create", "urgent", "-p", pool, "--priority", "1", "--paused")
    later = as_json(
        workpools(cli_env, "flow-run", "create", "-p", pool, "--name", "later", "--start-in", "7200", "-o", "json")
    )
    soon = as_json(workpools(cli_env, "flow-run", "create", "-p", pool, "--name", "soon", "-o", "json"))
    urgent = as_json(
        workpools(cli_env, "flow-run", "create", "-p", pool, "-q", "urgent", "--name", "urgent", "-o", "json")
    )
    redis = Redis.from_url(cli_settings.redis_url)
    marks = redis.xlen(Channels(cli_settings.prefix).ready)

    waiting = as_json(workpools(cli_env, "work-pool", "preview", pool, "-o", "json"))
    assert [r["id"] for r in waiting] == [urgent["id"], soon["id"], later["id"]]  # paused queue included
    assert [
        r["name"] for r in as_json(workpools(cli_env, "work-pool", "preview", pool, "--hours", "1", "-o", "json"))
    ] == [
        "urgent",
        "soon",
    ]
    assert [r["name"] for r in as_json(workpools(cli_env, "pool", "preview", pool, "--limit", "1", "-o", "json"))] == [
        "urgent"
    ]
    queue_preview = as_json(workpools(cli_env, "work-queue", "preview", "default", "-p", pool, "-o", "json"))
    assert [r["name"] for r in queue_preview] == ["soon", "later"]
    table = workpools(cli_env, "work-pool", "preview", pool).stdout
    assert [cells[1:4] for cells in rows(table)] == [
        ["urgent", "urgent", "Scheduled"],
        ["soon", "default", "Scheduled"],
        ["later", "default", "Scheduled"],
    ]

    # Not a poll: no ready mark, no queue polled, no status changed.
    assert redis.xlen(Channels(cli_settings.prefix).ready) == marks
    for queue in as_json(workpools(cli_env, "work-queue", "ls", "-p", pool, "-o", "json")):
        assert (queue["last_polled"], queue["status"]) == (None, "PAUSED" if queue["name"] == "urgent" else "NOT_READY")
    redis.close()
    missing = workpools(cli_env, "work-queue", "preview", "nope", "-p", pool, exit_code=1)
    assert (
        missing.stderr.strip() == f'Work queue "nope" not found in work pool "{pool}".' or "not found" in missing.stderr
    )


def test_worker_poll_hands_out_due_runs_and_claims_lease_them(cli_env):
    pool = unique("pool")
    workpools(cli_env, "work-pool", "create", pool, "--type", "process")
    assert workpools(cli_env, "worker", "poll", "--pool", pool).stdout.strip() == f'No runs due in pool "{pool}".'
    first = as_json(workpools(cli_env, "flow-run", "create", "-p", pool, "--name", "first", "-o", "json"))
    second = as_json(workpools(cli_env, "flow-run", "create", "-p", pool, "--name", "second", "-o", "json"))
    workpools(cli_env, "flow-run", "create", "-p", pool, "--name", "later", "--start-in", "3600")

    polled = as_json(workpools(cli_env, "worker", "poll", "-p", pool, "-o", "json"))
    assert [(r["flow_run"]["id"], r["lease"]) for r in polled] == [(first["id"], None), (second["id"], None)]
    [claimed] = as_json(
        workpools(cli_env, "worker", "poll", "-p", pool, "--limit", "1", "--claim", "w-1", "-o", "json")
    )
    assert claimed["flow_run"]["id"] == first["id"] and claimed["lease"]["owner"] == "w-1"
    [left] = as_jsonl(workpools(cli_env, "worker", "poll", "-p", pool, "--claim", "w-2", "-o", "jsonl"))
    assert left["flow_run"]["id"] == second["id"]  # the leased run is not handed out again
    table = workpools(cli_env, "worker", "poll", "-p", pool).stdout
    assert table.strip() == f'No runs due in pool "{pool}".'
