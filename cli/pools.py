"""`workpools work-pool …` (alias `pool`): create, update, limits, pause/resume, inspect, ls, delete."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from cli.connection import call, connected, read_all
from cli.flow_runs import runs_table
from cli.inputs import given, read_document
from cli.output import Output, OutputOpt, cell, emit, emit_list, fields_table, say
from schemas.common import DEFAULT_LIMIT
from schemas.work_pools import WorkPool

app = typer.Typer(help="Work pools (alias: pool).", no_args_is_help=True)

NameArg = Annotated[str, typer.Argument(help="The work pool's name.", show_default=False)]
TemplateOpt = Annotated[
    Path | None,
    typer.Option(
        "--base-job-template",
        help="A JSON (or .yaml) file with the base job template: job_configuration and variables.",
        show_default=False,
    ),
]
LimitOpt = Annotated[int | None, typer.Option(min=0, help="Runs at once at most (default: unlimited).")]
DescriptionOpt = Annotated[str | None, typer.Option(help="Free text.", show_default=False)]


@app.command("create")
@connected
def create(
    name: NameArg,
    pool_type: Annotated[
        str | None, typer.Option("--type", "-t", help="Worker type, e.g. process (default: prefect-agent).")
    ] = None,
    base_job_template: TemplateOpt = None,
    paused: Annotated[bool, typer.Option("--paused", help="Create it paused.")] = False,
    concurrency_limit: LimitOpt = None,
    description: DescriptionOpt = None,
    output: OutputOpt = Output.table,
) -> None:
    """Create a work pool (with its default queue)."""
    template = read_document(base_job_template, "base job template") if base_job_template else None
    body = given(
        name=name,
        type=pool_type,
        base_job_template=template,
        is_paused=paused,
        concurrency_limit=concurrency_limit,
        description=description,
    )
    pool = call(lambda client: client.create_work_pool(body))
    say(f'Created work pool "{pool.name}".', "green", output)
    emit(pool, output, lambda: pool_table(pool))


@app.command("update")
@connected
def update(
    name: NameArg,
    base_job_template: TemplateOpt = None,
    concurrency_limit: LimitOpt = None,
    description: DescriptionOpt = None,
) -> None:
    """Change a work pool's base job template, concurrency limit or description."""
    changes: dict[str, Any] = given(concurrency_limit=concurrency_limit, description=description)
    if base_job_template is not None:
        changes["base_job_template"] = read_document(base_job_template, "base job template")
    if not changes:
        raise typer.BadParameter("nothing to change: give --base-job-template, --concurrency-limit or --description")
    call(lambda client: client.update_work_pool(name, changes))
    say(f'Updated work pool "{name}".')


@app.command("set-concurrency-limit")
@connected
def set_concurrency_limit(
    name: NameArg, limit: Annotated[int, typer.Argument(min=0, help="Runs at once at most.", show_default=False)]
) -> None:
    """Limit how many runs of the pool may be pending or running at once."""
    call(lambda client: client.update_work_pool(name, {"concurrency_limit": limit}))
    say(f'Set the concurrency limit of work pool "{name}" to {limit}.')


@app.command("clear-concurrency-limit")
@connected
def clear_concurrency_limit(name: NameArg) -> None:
    """Remove the pool's concurrency limit."""
    call(lambda client: client.update_work_pool(name, {"concurrency_limit": None}))
    say(f'Cleared the concurrency limit of work pool "{name}".')


@app.command("pause")
@connected
def pause(name: NameArg) -> None:
    """Pause a work pool: its workers get no runs."""
    call(lambda client: client.update_work_pool(name, {"is_paused": True}))
    say(f'Paused work pool "{name}".')


@app.command("resume")
@connected
def resume(name: NameArg) -> None:
    """Resume a paused work pool."""
    call(lambda client: client.update_work_pool(name, {"is_paused": False}))
    say(f'Resumed work pool "{name}".')


@app.command("inspect")
@connected
def inspect(name: NameArg, output: OutputOpt = Output.table) -> None:
    """Show every field of a work pool."""
    pool = call(lambda client: client.read_work_pool(name))
    emit(pool, output, lambda: pool_table(pool))


@app.command("ls")
@connected
def ls(output: OutputOpt = Output.table) -> None:
    """List the work pools."""
    pools = call(lambda client: read_all(lambda offset: client.read_work_pools(limit=DEFAULT_LIMIT, offset=offset)))
    emit_list(pools, output, pools_table, "No work pools.")


@app.command("delete")
@connected
def delete(name: NameArg) -> None:
    """Delete a work pool with its queues and workers."""
    call(lambda client: client.delete_work_pool(name))
    say(f'Deleted work pool "{name}".')


@app.command("preview")
@connected
def preview(
    name: NameArg,
    hours: Annotated[
        float | None, typer.Option(min=0, help="Only runs due within this many hours (default: any time).")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=DEFAULT_LIMIT, help="At most this many.")] = 50,
    output: OutputOpt = Output.table,
) -> None:
    """The runs waiting in the pool, in the order workers get them; read only (not a poll).

    Paused queues and concurrency limits are not applied: this is what waits, not what the
    next poll would hand out.
    """
    before = datetime.now(UTC) + timedelta(hours=hours) if hours is not None else None
    runs = call(lambda client: client.preview_scheduled_flow_runs(name, scheduled_before=before, limit=limit))
    emit_list(runs, output, lambda rows: runs_table(rows, f'Runs waiting in "{name}"'), f'No runs waiting in "{name}".')


def pool_table(pool: WorkPool) -> Table:
    return fields_table(pool, f'Work pool "{pool.name}"')


def pools_table(pools: Sequence[WorkPool]) -> Table:
    table = Table("Name", "Type", "Status", "Concurrency limit", title="Work pools")
    for pool in pools:
        table.add_row(cell(pool.name), cell(pool.type), cell(pool.status), cell(pool.concurrency_limit, "unlimited"))
    return table
