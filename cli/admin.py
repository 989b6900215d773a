"""`workpools pool | queue | worker …`: administration through `WorkPoolClient`, as Rich tables,
and `workpools worker --pool NAME`, a process worker (`client.process_worker`).

Every command makes its requests with one client (WORKPOOLS_REDIS_URL, WORKPOOLS_PREFIX). A
request that fails prints the service's detail in red on stderr and exits with 1.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from enum import Enum
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from pydantic import BaseModel
from redis.exceptions import ConnectionError as RedisConnectionError
from rich.console import Console
from rich.table import Table
from rich.text import Text

from client import WorkPoolClient, WorkPoolsError
from client.process_worker import ProcessWorker
from schemas.common import DEFAULT_LIMIT
from schemas.settings import Settings
from schemas.work_pools import WorkPool
from schemas.work_queues import WorkQueue

T = TypeVar("T")

pool_cli = typer.Typer(help="Work pools.", no_args_is_help=True)
queue_cli = typer.Typer(help="Work queues of a pool.", no_args_is_help=True)
worker_cli = typer.Typer(
    help="Run a process worker (--pool NAME), or list a pool's workers (ls).", no_args_is_help=True
)

PoolArg = Annotated[str, typer.Argument(help="The work pool's name.", show_default=False)]
ConcurrencyOpt = Annotated[int | None, typer.Option(min=0, help="Runs at once at most (default: unlimited).")]


def register(cli: typer.Typer) -> None:
    cli.add_typer(pool_cli, name="pool")
    cli.add_typer(queue_cli, name="queue")
    cli.add_typer(worker_cli, name="worker")


# work pools


@pool_cli.command("ls")
def pool_ls() -> None:
    """List the work pools."""
    pools = call(lambda client: read_all(lambda offset: client.read_work_pools(limit=DEFAULT_LIMIT, offset=offset)))
    table = Table("Name", "Type", "Status", "Concurrency limit", title="Work pools")
    for pool in pools:
        table.add_row(cell(pool.name), cell(pool.type), cell(pool.status), cell(pool.concurrency_limit, "unlimited"))
    show(table, pools, "No work pools.")


@pool_cli.command("inspect")
def pool_inspect(name: PoolArg) -> None:
    """Show every field of a work pool."""
    show_pool(call(lambda client: client.read_work_pool(name)))


@pool_cli.command("create")
def pool_create(
    name: PoolArg,
    pool_type: Annotated[
        str | None, typer.Option("--type", help="Worker type, e.g. process (default: prefect-agent).")
    ] = None,
    paused: Annotated[bool, typer.Option("--paused", help="Create it paused.")] = False,
    concurrency_limit: ConcurrencyOpt = None,
    description: Annotated[str | None, typer.Option(help="Free text.")] = None,
) -> None:
    """Create a work pool (with its default queue)."""
    body = given(
        name=name, type=pool_type, is_paused=paused, concurrency_limit=concurrency_limit, description=description
    )
    pool = call(lambda client: client.create_work_pool(body))
    say(f'Created work pool "{pool.name}".', "green")
    show_pool(pool)


@pool_cli.command("pause")
def pool_pause(name: PoolArg) -> None:
    """Pause a work pool: its workers get no runs."""
    call(lambda client: client.update_work_pool(name, {"is_paused": True}))
    say(f'Paused work pool "{name}".')


@pool_cli.command("resume")
def pool_resume(name: PoolArg) -> None:
    """Resume a paused work pool."""
    call(lambda client: client.update_work_pool(name, {"is_paused": False}))
    say(f'Resumed work pool "{name}".')


@pool_cli.command("delete")
def pool_delete(name: PoolArg) -> None:
    """Delete a work pool with its queues and workers."""
    call(lambda client: client.delete_work_pool(name))
    say(f'Deleted work pool "{name}".')


def show_pool(pool: WorkPool) -> None:
    table = Table("Field", "Value", title=cell(f'Work pool "{pool.name}"'))
    for field in WorkPool.model_fields:
        table.add_row(field, cell(getattr(pool, field)))
    Console().print(table)


# work queues


@queue_cli.command("ls")
def queue_ls(pool: PoolArg) -> None:
    """List a pool's work queues, by priority."""
    queues = call(
        lambda client: read_all(lambda offset: client.read_work_queues(pool, limit=DEFAULT_LIMIT, offset=offset))
    )
    show_queues(pool, queues)


@queue_cli.command("create")
def queue_create(
    pool: PoolArg,
    name: Annotated[str, typer.Argument(help="The queue's name.", show_default=False)],
    priority: Annotated[
        int | None, typer.Option(min=1, help="1 is served first (default: the first free one).")
    ] = None,
    concurrency_limit: ConcurrencyOpt = None,
    paused: Annotated[bool, typer.Option("--paused", help="Create it paused.")] = False,
) -> None:
    """Create a work queue in a pool."""
    body = given(name=name, priority=priority, concurrency_limit=concurrency_limit, is_paused=paused)
    queue = call(lambda client: client.create_work_queue(pool, body))
    say(f'Created work queue "{queue.name}" in pool "{pool}".', "green")
    show_queues(pool, [queue])


def show_queues(pool: str, queues: list[WorkQueue]) -> None:
    table = Table(
        "Name", "Priority", "Status", "Concurrency limit", "Last polled", title=cell(f'Work queues of "{pool}"')
    )
    for queue in queues:
        table.add_row(
            cell(queue.name),
            cell(queue.priority),
            cell(queue.status),
            cell(queue.concurrency_limit, "unlimited"),
            cell(queue.last_polled, "never"),
        )
    show(table, queues, f'No work queues in pool "{pool}".')


# workers


@worker_cli.callback(invoke_without_command=True)
def worker_run(
    ctx: typer.Context,
    pool: Annotated[str | None, typer.Option(help="The work pool to serve.", show_default=False)] = None,
    queue: Annotated[
        list[str] | None, typer.Option(help="A queue to poll; repeat for several (default: all).", show_default=False)
    ] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="Runs at once at most (default: unlimited).")] = None,
    name: Annotated[
        str | None, typer.Option(help="The worker's name (default: <hostname>-<pid>).", show_default=False)
    ] = None,
    heartbeat_interval: Annotated[float, typer.Option(min=0.1, help="Seconds between heartbeats.")] = 30.0,
    poll_interval: Annotated[float, typer.Option(min=0.05, help="Seconds between polls.")] = 10.0,
    prefetch_seconds: Annotated[float, typer.Option(min=0, help="Take runs due this many seconds ahead.")] = 10.0,
    grace_seconds: Annotated[
        float, typer.Option(min=0, help="On SIGTERM, how long running commands get before SIGKILL.")
    ] = 10.0,
    log_level: Annotated[str, typer.Option(help="Python logging level.")] = "INFO",
) -> None:
    """Run a process worker: poll the pool, run each flow run's command, report how it ended.

    SIGTERM or Ctrl-C stops it: running commands get SIGTERM (SIGKILL after --grace-seconds)
    and every run it did not finish goes back to SCHEDULED for another worker.
    """
    if ctx.invoked_subcommand is not None:
        return
    if pool is None:
        typer.echo(ctx.get_help())
        fail("Missing option --pool.", code=2)
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = Settings()
    worker = ProcessWorker(
        pool,
        queue,
        limit=limit,
        name=name,
        heartbeat_interval=heartbeat_interval,
        poll_interval=poll_interval,
        prefetch_seconds=prefetch_seconds,
        grace_seconds=grace_seconds,
        redis_url=settings.redis_url,
        prefix=settings.prefix,
    )
    try:
        asyncio.run(worker.run())
    except WorkPoolsError as exc:
        fail(describe(exc.detail))
    except (RedisConnectionError, OSError) as exc:
        fail(f"Cannot reach Redis: {exc}")


@worker_cli.command("ls")
def worker_ls(pool: PoolArg) -> None:
    """List a pool's workers, latest heartbeat first."""
    workers = call(
        lambda client: read_all(
            lambda offset: client.read_workers_for_work_pool(pool, offset=offset, limit=DEFAULT_LIMIT)
        )
    )
    table = Table("Name", "Status", "Last heartbeat", "Heartbeat interval (s)", title=cell(f'Workers of "{pool}"'))
    for worker in workers:
        table.add_row(
            cell(worker.name),
            cell(worker.status),
            cell(worker.last_heartbeat_time),
            cell(worker.heartbeat_interval_seconds),
        )
    show(table, workers, f'No workers in pool "{pool}".')


# plumbing


def call(request: Callable[[WorkPoolClient], Awaitable[T]]) -> T:
    """Run `request` with a connected client; on failure print why and exit with 1."""
    settings = Settings()

    async def run() -> T:
        async with WorkPoolClient(redis_url=settings.redis_url, prefix=settings.prefix) as client:
            return await request(client)

    try:
        return asyncio.run(run())
    except WorkPoolsError as exc:
        fail(describe(exc.detail))
    except TimeoutError:  # before OSError, its base class
        fail("Cannot reach Redis: no connection in time.")
    except (RedisConnectionError, OSError) as exc:
        fail(f"Cannot reach Redis: {exc}")


async def read_all(read_page: Callable[[int], Awaitable[list[T]]]) -> list[T]:
    """Every item of a paged list (pages of `DEFAULT_LIMIT`, the service's maximum)."""
    items: list[T] = []
    while True:
        page = await read_page(len(items))
        items += page
        if len(page) < DEFAULT_LIMIT:
            return items


def given(**fields: Any) -> dict[str, Any]:
    """The fields the user gave (so the service's defaults apply to the others)."""
    return {key: value for key, value in fields.items() if value is not None}


def cell(value: Any, missing: str = "-") -> Text:
    """A value as plain table text (never read as Rich markup: names may contain `[`)."""
    return Text(missing if value is None else _text(value))


def _text(value: Any) -> str:
    if isinstance(value, Enum):
        return str(value.value)
    if isinstance(value, datetime):
        return value.isoformat(sep=" ", timespec="seconds")
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    if isinstance(value, (dict, list)):
        return json.dumps(value, indent=2)
    return str(value)


def show(table: Table, rows: Sequence[object], empty: str) -> None:
    if rows:
        Console().print(table)
    else:
        say(empty, "dim")


def say(message: str, style: str | None = None) -> None:
    Console(highlight=False).print(message, style=style, markup=False)


def describe(detail: Any) -> str:
    """A reply's detail as text; validation errors one per line, as `field: message`."""
    if not isinstance(detail, list):
        return str(detail)
    lines = []
    for error in detail:
        if isinstance(error, dict) and "msg" in error:
            where = ".".join(str(part) for part in error.get("loc", ()))
            lines.append(f"{where}: {error['msg']}" if where else str(error["msg"]))
        else:
            lines.append(str(error))
    return "\n".join(lines)


def fail(message: str, code: int = 1) -> NoReturn:
    Console(stderr=True, highlight=False).print(message, style="red", markup=False)
    raise typer.Exit(code)
