"""The `workpools` command against a real replica: a `workpools serve` process on real Redis and
PostgreSQL (the commands call `asyncio.run`, so the replica cannot run in the test's event loop)."""

from __future__ import annotations

import asyncio
import json
import os
import re
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from typer.testing import CliRunner, Result

from cli.main import cli
from client import ServiceUnavailable, WorkPoolClient
from replica.asyncapi import CONSUMER_PLACEHOLDER, ERROR_STATUSES
from schemas.channels import Channels, Op
from schemas.operations import OPERATIONS
from schemas.settings import Settings
from tests.factories import unique, wait_until
from tests.replicas import Replica, replicas

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def env(settings: Settings) -> dict[str, str]:
    """What the commands read; wide enough that no table cell wraps."""
    return {
        "WORKPOOLS_REDIS_URL": settings.redis_url,
        "WORKPOOLS_DATABASE_URL": settings.database_url,
        "WORKPOOLS_PREFIX": settings.prefix,
        "COLUMNS": "200",
    }


@pytest.fixture
def replica(settings: Settings, db, redis) -> Iterator[Replica]:
    """A `workpools serve` process on clean tables, answering before the test starts."""
    with replicas(settings, "cli") as (replica,):
        asyncio.run(wait_until_answering(replica, settings))
        yield replica


async def wait_until_answering(replica: Replica, settings: Settings) -> None:
    async def answered(client: WorkPoolClient) -> bool:
        assert replica.process.poll() is None, f"the replica exited:\n{replica.output()}"
        try:
            await client.count_work_pools()  # waits up to the client's timeout for the reply
        except ServiceUnavailable:
            return False
        return True

    async with WorkPoolClient(settings.redis_url, settings.prefix, timeout=1.0) as client:
        await wait_until(lambda: answered(client), timeout=20)


def with_client(settings: Settings, request: Callable[[WorkPoolClient], Awaitable[Any]]) -> Any:
    async def run() -> Any:
        async with WorkPoolClient(settings.redis_url, settings.prefix, timeout=10) as client:
            return await request(client)

    return asyncio.run(run())


def workpools(env: dict[str, str], *args: str, exit_code: int = 0) -> Result:
    result = CliRunner().invoke(cli, list(args), env=env)
    assert result.exit_code == exit_code, result.output
    return result


def rows(output: str) -> list[list[str]]:
    """The cells of each table line in `output`."""
    return [
        [cell.strip() for cell in re.split(r"[│|]", line)[1:-1]]
        for line in output.splitlines()
        if re.match(r"\s*[│|]", line)
    ]


def row(output: str, first_cell: str) -> list[str] | None:
    return next((cells for cells in rows(output) if cells[0] == first_cell), None)


def test_pool_commands(replica, env):
    name = unique("pool[bold]")  # printed as is, not read as Rich markup

    created = workpools(
        env,
        "pool",
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
    assert row(workpools(env, "pool", "ls").stdout, name) == [name, "process", "NOT_READY", "3"]

    fields = {cells[0]: cells[1] for cells in rows(workpools(env, "pool", "inspect", name).stdout) if cells[0]}
    assert UUID(fields["id"]) and UUID(fields["default_queue_id"])
    assert (fields["name"], fields["type"], fields["description"]) == (name, "process", "made by the CLI test")
    assert (fields["is_paused"], fields["concurrency_limit"], fields["status"]) == ("False", "3", "NOT_READY")
    assert {"created", "updated", "base_job_template", "storage_configuration", "active_slots"} <= set(fields)

    assert workpools(env, "pool", "pause", name).stdout.strip() == f'Paused work pool "{name}".'
    assert row(workpools(env, "pool", "ls").stdout, name)[2] == "PAUSED"
    assert row(workpools(env, "pool", "inspect", name).stdout, "is_paused") == ["is_paused", "True"]

    workpools(env, "pool", "resume", name)
    assert row(workpools(env, "pool", "ls").stdout, name)[2] == "NOT_READY"

    assert workpools(env, "pool", "delete", name).stdout.strip() == f'Deleted work pool "{name}".'
    assert row(workpools(env, "pool", "ls").stdout, name) is None


def test_queue_and_worker_commands(replica, env, settings):
    pool = unique("pool")
    workpools(env, "pool", "create", pool, "--type", "process")

    created = workpools(env, "queue", "create", pool, "urgent", "--priority", "1", "--concurrency-limit", "2")
    assert f'Created work queue "urgent" in pool "{pool}".' in created.stdout
    workpools(env, "queue", "create", pool, "later", "--paused")

    queues = workpools(env, "queue", "ls", pool).stdout
    assert [cells[0] for cells in rows(queues)] == ["urgent", "default", "later"]
    assert row(queues, "urgent") == ["urgent", "1", "NOT_READY", "2", "never"]
    assert row(queues, "later")[1:4] == ["3", "PAUSED", "unlimited"]

    assert f'No workers in pool "{pool}".' in workpools(env, "worker", "ls", pool).stdout
    with_client(settings, lambda client: client.send_worker_heartbeat(pool, "worker-1", heartbeat_interval_seconds=30))
    worker = row(workpools(env, "worker", "ls", pool).stdout, "worker-1")
    assert worker is not None and (worker[1], worker[3]) == ("ONLINE", "30")


def test_a_failed_request_prints_the_detail_in_red_and_exits_1(replica, env):
    missing = workpools(env, "pool", "inspect", "nope", exit_code=1)
    assert missing.stderr.strip() == 'Work pool "nope" not found.'
    assert missing.stdout == "" and "Traceback" not in missing.output
    assert workpools(env, "queue", "ls", "nope", exit_code=1).stderr.strip() == 'Work pool "nope" not found.'

    name = unique("pool")
    workpools(env, "pool", "create", name)
    assert "already exists" in workpools(env, "pool", "create", name, exit_code=1).stderr
    invalid = workpools(env, "pool", "create", "a/b", exit_code=1)
    assert invalid.stderr.startswith("name: String should match pattern")


def resolve(document: dict[str, Any], ref: str) -> Any:
    """What a local `$ref` points at, following references to references."""
    node: Any = document
    for part in ref.removeprefix("#/").split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
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


def test_docs_asyncapi_documents_every_request_and_its_replies(env, prefix, tmp_path):
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

    read_pool = resolve(document, f"#/components/messages/{prefix}.rpc.read_work_pool:Reply")
    assert resolve(document, read_pool["payload"]["$ref"])["title"] == "WorkPool"
    assert document["components"]["messages"][f"{prefix}.rpc.read_work_pools:Reply"]["payload"] == {
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
