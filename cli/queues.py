"""`workpools work-queue …` (alias `queue`): a pool's queues, named as in Prefect (`NAME --pool P`)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Annotated

import typer
from rich.table import Table

from cli.connection import call, connected, read_all
from cli.flow_runs import runs_table
from cli.inputs import given
from cli.output import Output, OutputOpt, cell, emit, emit_list, fields_table, say
from client import WorkPoolClient
from schemas.common import DEFAULT_LIMIT
from schemas.work_queues import WorkQueue

app = typer.Typer(help="Work queues of a pool (alias: queue).", no_args_is_help=True)

NameArg = Annotated[str, typer.Argument(help="The work queue's name.", show_default=False)]
PoolOpt = Annotated[str, typer.Option("--pool", "-p", help="The work pool it belongs to.", show_default=False)]
LimitOpt = Annotated[int | None, typer.Option(min=0, help="Runs at once at most (default: unlimited).")]
PriorityOpt = Annotated[int | None, typer.Option(min=1, help="1 is served first (default: the first free one).")]
DescriptionOpt = Annotated[str | None, typer.Option(help="Free text.", show_default=False)]


@app.command("create")
@connected
def create(
    name: NameArg,
    pool: PoolOpt,
    priority: PriorityOpt = None,
    concurrency_limit: LimitOpt = None,
    paused: Annotated[bool, typer.Option("--paused", help="Create it paused.")] = False,
    description: DescriptionOpt = None,
    output: OutputOpt = Output.table,
) -> None:
    """Create a work queue in a pool."""
    body = given(
        name=name, priority=priority, concurrency_limit=concurrency_limit, is_paused=paused, description=description
    )
    queue = call(lambda client: client.create_work_queue(pool, body))
    say(f'Created work queue "{queue.name}" in pool "{pool}".', "green", output)
    emit(queue, output, lambda: queue_table(queue))


@app.command("update")
@connected
def update(
    name: NameArg,
    pool: PoolOpt,
    new_name: Annotated[str | None, typer.Option("--name", help="Rename it.", show_default=False)] = None,
    priority: PriorityOpt = None,
    concurrency_limit: LimitOpt = None,
    description: DescriptionOpt = None,
) -> None:
    """Change a work queue's name, priority, concurrency limit or description."""
    changes = given(name=new_name, priority=priority, concurrency_limit=concurrency_limit, description=description)
    if not changes:
        raise typer.BadParameter("nothing to change: give --name, --priority, --concurrency-limit or --description")
    call(lambda client: client.update_work_queue(pool, name, changes))
    say(f'Updated work queue "{name}" in pool "{pool}".')


@app.command("set-concurrency-limit")
@connected
def set_concurrency_limit(
    name: NameArg,
    limit: Annotated[int, typer.Argument(min=0, help="Runs at once at most.", show_default=False)],
    pool: PoolOpt,
) -> None:
    """Limit how many runs of the queue may be pending or running at once."""
    call(lambda client: client.update_work_queue(pool, name, {"concurrency_limit": limit}))
    say(f'Set the concurrency limit of work queue "{name}" in pool "{pool}" to {limit}.')


@app.command("clear-concurrency-limit")
@connected
def clear_concurrency_limit(name: NameArg, pool: PoolOpt) -> None:
    """Remove the queue's concurrency limit."""
    call(lambda client: client.update_work_queue(pool, name, {"concurrency_limit": None}))
    say(f'Cleared the concurrency limit of work queue "{name}" in pool "{pool}".')


@app.command("pause")
@connected
def pause(name: NameArg, pool: PoolOpt) -> None:
    """Pause a work queue: no runs are taken from it."""
    call(lambda client: client.update_work_queue(pool, name, {"is_paused": True}))
    say(f'Paused work queue "{name}" in pool "{pool}".')


@app.command("resume")
@connected
def resume(name: NameArg, pool: PoolOpt) -> None:
    """Resume a paused work queue."""
    call(lambda client: client.update_work_queue(pool, name, {"is_paused": False}))
    say(f'Resumed work queue "{name}" in pool "{pool}".')


@app.command("inspect")
@connected
def inspect(name: NameArg, pool: PoolOpt, output: OutputOpt = Output.table) -> None:
    """Show every field of a work queue."""
    queue = call(lambda client: client.read_work_queue(pool, name))
    emit(queue, output, lambda: queue_table(queue))


@app.command("ls")
@connected
def ls(
    pool: Annotated[
        str | None, typer.Option("--pool", "-p", help="Only this pool's queues (default: every pool's).")
    ] = None,
    output: OutputOpt = Output.table,
) -> None:
    """List work queues by pool and priority."""
    queues = call(lambda client: all_queues(client, pool))
    emit_list(queues, output, queues_table, f'No work queues in pool "{pool}".' if pool else "No work queues.")


@app.command("delete")
@connected
def delete(name: NameArg, pool: PoolOpt) -> None:
    """Delete a work queue (not a pool's default queue)."""
    call(lambda client: client.delete_work_queue(pool, name))
    say(f'Deleted work queue "{name}" in pool "{pool}".')


@app.command("preview")
@connected
def preview(
    name: NameArg,
    pool: PoolOpt,
    hours: Annotated[
        float | None, typer.Option(min=0, help="Only runs due within this many hours (default: any time).")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=DEFAULT_LIMIT, help="At most this many.")] = 50,
    output: OutputOpt = Output.table,
) -> None:
    """The runs waiting in the queue, in the order workers get them; read only (not a poll)."""
    before = datetime.now(UTC) + timedelta(hours=hours) if hours is not None else None
    runs = call(lambda client: client.preview_scheduled_flow_runs(pool, [name], scheduled_before=before, limit=limit))
    emit_list(
        runs,
        output,
        lambda rows: runs_table(rows, f'Runs waiting in "{name}" of "{pool}"'),
        f'No runs waiting in "{name}".',
    )


async def all_queues(client: WorkPoolClient, pool: str | None) -> list[WorkQueue]:
    if pool is not None:
        pools = [pool]
    else:
        pools = [p.name for p in await read_all(lambda offset: client.read_work_pools(DEFAULT_LIMIT, offset))]
    queues: list[WorkQueue] = []
    for name in pools:
        queues += await read_all(
            lambda offset, name=name: client.read_work_queues(name, limit=DEFAULT_LIMIT, offset=offset)
        )
    return queues


def queue_table(queue: WorkQueue) -> Table:
    return fields_table(queue, f'Work queue "{queue.name}" of pool "{queue.work_pool_name}"')


def queues_table(queues: Sequence[WorkQueue]) -> Table:
    table = Table("Name", "Pool", "Priority", "Status", "Concurrency limit", "Last polled", title="Work queues")
    for queue in queues:
        table.add_row(
            cell(queue.name),
            cell(queue.work_pool_name),
            cell(queue.priority),
            cell(queue.status),
            cell(queue.concurrency_limit, "unlimited"),
            cell(queue.last_polled, "never"),
        )
    return table
