"""`workpools flow-run …`: create, inspect and change the state of flow runs."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Annotated
from uuid import UUID

import typer
from rich.table import Table

from cli.connection import call, connected
from cli.deployments import JobVariablesOpt
from cli.inputs import given, key_values
from cli.output import ExitCode, Output, OutputOpt, cell, emit, emit_list, fields_table, say
from schemas.common import DEFAULT_LIMIT, StateType
from schemas.flow_runs import FlowRun, SetStateStatus

app = typer.Typer(help="Flow runs: create, inspect and list them, propose their states.", no_args_is_help=True)

IdArg = Annotated[UUID, typer.Argument(help="The flow run's id.", show_default=False)]


@app.command("create")
@connected
def create(
    deployment: Annotated[
        UUID | None, typer.Option("--deployment", "-d", help="Run this deployment.", show_default=False)
    ] = None,
    pool: Annotated[
        str | None, typer.Option("--pool", "-p", help="Its work pool (default: the deployment's).", show_default=False)
    ] = None,
    queue: Annotated[str | None, typer.Option("--queue", "-q", help="Its work queue (needs --pool).")] = None,
    name: Annotated[str | None, typer.Option(help="Its name (default: generated).", show_default=False)] = None,
    job_variables: JobVariablesOpt = None,
    parameters: Annotated[
        list[str] | None,
        typer.Option(
            "--param", help="KEY=VALUE, repeatable; a VALUE that reads as JSON is that JSON.", show_default=False
        ),
    ] = None,
    tags: Annotated[list[str] | None, typer.Option("--tag", help="A tag; repeatable.", show_default=False)] = None,
    start_in: Annotated[
        float | None, typer.Option(min=0, help="Due this many seconds from now (default: now).", show_default=False)
    ] = None,
    output: OutputOpt = Output.table,
) -> None:
    """Create a SCHEDULED flow run, of a deployment or directly in a pool."""
    if deployment is None and pool is None:
        raise typer.BadParameter("give --deployment or --pool")
    when = (datetime.now(UTC) + timedelta(seconds=start_in)).isoformat() if start_in is not None else None
    body = given(
        deployment_id=str(deployment) if deployment else None,
        work_pool_name=pool,
        work_queue_name=queue,
        name=name,
        job_variables=key_values(job_variables, "--job-variable"),
        parameters=key_values(parameters, "--param"),
        tags=tags or None,
        next_scheduled_start_time=when,
    )
    run = call(lambda client: client.create_flow_run(body))
    say(f'Created flow run "{run.name}" ({run.id}).', "green", output)
    emit(run, output, lambda: flow_run_table(run))


@app.command("inspect")
@connected
def inspect(flow_run_id: IdArg, output: OutputOpt = Output.table) -> None:
    """Show every field of a flow run."""
    run = call(lambda client: client.read_flow_run(flow_run_id))
    emit(run, output, lambda: flow_run_table(run))


@app.command("set-state")
@connected
def set_state(
    flow_run_id: IdArg,
    state: Annotated[StateType, typer.Argument(case_sensitive=False, help="The proposed state.", show_default=False)],
    name: Annotated[str | None, typer.Option(help="The state's name (default: its type's).")] = None,
    message: Annotated[str | None, typer.Option(help="Why.", show_default=False)] = None,
    lease_token: Annotated[
        int | None, typer.Option(help="Claim mode: the token the run was claimed with.", show_default=False)
    ] = None,
    output: OutputOpt = Output.table,
) -> None:
    """Propose a state for a flow run; exits 1 unless it is accepted."""
    proposal = given(type=state.value, name=name, message=message)
    result = call(lambda client: client.set_flow_run_state(flow_run_id, proposal, lease_token=lease_token))
    emit(result, output, lambda: fields_table(result, f"{state.value} proposed for {flow_run_id}"))
    if result.status is not SetStateStatus.ACCEPT:
        raise typer.Exit(int(ExitCode.REFUSED))


def flow_run_table(run: FlowRun) -> Table:
    return fields_table(run, f'Flow run "{run.name}"')


@app.command("ls")
@connected
def ls(
    pool: Annotated[str | None, typer.Option("--pool", "-p", help="Only runs of this work pool.")] = None,
    queue: Annotated[
        list[str] | None, typer.Option("--queue", "-q", help="Only runs of this queue; repeatable.")
    ] = None,
    deployment: Annotated[
        list[UUID] | None, typer.Option("--deployment", "-d", help="Only runs of this deployment; repeatable.")
    ] = None,
    state: Annotated[
        list[StateType] | None,
        typer.Option("--state", "-s", case_sensitive=False, help="Only runs in this state type; repeatable."),
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=DEFAULT_LIMIT, help="At most this many, newest first.")] = 50,
    output: OutputOpt = Output.table,
) -> None:
    """List flow runs, newest first."""
    run_filter = given(
        deployment_id={"any_": [str(d) for d in deployment]} if deployment else None,
        state={"type": {"any_": [s.value for s in state]}} if state else None,
    )
    runs = call(
        lambda client: client.read_flow_runs(
            flow_run_filter=run_filter or None,
            work_pool_filter={"name": {"any_": [pool]}} if pool else None,
            work_queue_filter={"name": {"any_": queue}} if queue else None,
            limit=limit,
        )
    )
    emit_list(runs, output, runs_table, "No flow runs.")


def runs_table(runs: Sequence[FlowRun], title: str = "Flow runs") -> Table:
    table = Table("Id", "Name", "Queue", "State", "Scheduled", title=title)
    for run in runs:
        table.add_row(
            cell(run.id),
            cell(run.name),
            cell(run.work_queue_name),
            cell(run.state_name),
            cell(run.next_scheduled_start_time),
        )
    return table
