"""Running the `workpools` command in tests: one replica per test module, the command in-process."""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from redis import Redis
from typer.testing import CliRunner, Result

from cli.main import cli
from client import ServiceUnavailable, WorkPoolClient
from schemas.settings import Settings
from tests.factories import wait_until
from tests.replicas import Replica, replicas


def command_env(settings: Settings, **extra: str) -> dict[str, str]:
    """What the commands read; wide enough that no table cell wraps."""
    return {
        "WORKPOOLS_REDIS_URL": settings.redis_url,
        "WORKPOOLS_DATABASE_URL": settings.database_url,
        "WORKPOOLS_PREFIX": settings.prefix,
        "COLUMNS": "250",
        **extra,
    }


def workpools(env: dict[str, str], *args: str, exit_code: int = 0) -> Result:
    result = CliRunner().invoke(cli, list(args), env=env, prog_name="workpools")
    assert result.exit_code == exit_code, (result.exit_code, result.output, result.exception)
    return result


def timed(env: dict[str, str], *args: str, exit_code: int) -> tuple[Result, float]:
    started = time.monotonic()
    result = workpools(env, *args, exit_code=exit_code)
    return result, time.monotonic() - started


def as_json(result: Result) -> Any:
    return json.loads(result.stdout)


def as_jsonl(result: Result) -> list[Any]:
    return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]


def rows(output: str) -> list[list[str]]:
    """The cells of each table line in `output`."""
    return [
        [cell.strip() for cell in re.split(r"[│|]", line)[1:-1]]
        for line in output.splitlines()
        if re.match(r"\s*[│|]", line)
    ]


def row(output: str, first_cell: str) -> list[str] | None:
    return next((cells for cells in rows(output) if cells[0] == first_cell), None)


@contextmanager
def serving_replica(redis_url: str, database_url: str) -> Iterator[tuple[Settings, Replica]]:
    """A `workpools serve` process on its own prefix, answering before this yields; its keys
    are removed afterwards."""
    settings = Settings(
        redis_url=redis_url,
        database_url=database_url,
        prefix=f"cli{uuid.uuid4().hex[:10]}",
        consumer_name=f"cli-{uuid.uuid4().hex[:6]}",
    )
    try:
        with replicas(settings, settings.consumer_name) as (replica,):
            asyncio.run(_wait_until_answering(replica, settings))
            yield settings, replica
    finally:
        redis = Redis.from_url(redis_url)
        keys = list(redis.scan_iter(match=f"{settings.prefix}.*", count=1000))
        if keys:
            redis.delete(*keys)
        redis.close()


async def _wait_until_answering(replica: Replica, settings: Settings) -> None:
    async def answered(client: WorkPoolClient) -> bool:
        assert replica.process.poll() is None, f"the replica exited:\n{replica.output()}"
        try:
            await client.count_work_pools()
        except ServiceUnavailable:
            return False
        return True

    async with WorkPoolClient(settings.redis_url, settings.prefix, timeout=1.0, retries=0) as client:
        await wait_until(lambda: answered(client), timeout=30)
