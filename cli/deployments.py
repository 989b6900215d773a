"""`workpools deployment …`: create and inspect deployments (a pool's queue and job variables)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated
from uuid import UUID

import typer
from rich.table import Table

from cli.connection import call, connected, read_all
from cli.inputs import given, key_values
from cli.output import Output, OutputOpt, cell, emit, emit_list, fields_table, say
from schemas.common import DEFAULT_LIMIT
from schemas.deployments import Deployment

app = typer.Typer(
    help="Deployments: which pool and queue their runs go to, with which job variables.", no_args_is_help=True
)

IdArg = Annotated[UUID, typer.Argument(help="The deployment's id.", show_default=False)]
JobVariablesOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--job-variable",
        "-jv",
        help='KEY=VALUE, repeatable; a VALUE that reads as JSON is that JSON (e.g. env=\'{"A": "1"}\').',
        show_default=False,
    ),
]


@app.command("create")
@connected
def create(
    name: Annotated[str, typer.Argument(help="The deployment's name.", show_default=False)],
    pool: Annotated[str, typer.Option("--pool", "-p", help="Its work pool.", show_default=False)],
    queue: Annotated[
        str | None, typer.Option("--queue", "-q", help="Its work queue (default: the pool's default queue).")
    ] = None,
    job_variables: JobVariablesOpt = None,
    flow_id: Annotated[UUID | None, typer.Option(help="The flow it runs.", show_default=False)] = None,
    paused: Annotated[bool, typer.Option("--paused", help="Create it paused.")] = False,
    output: OutputOpt = Output.table,
) -> None:
    """Create a deployment on a pool's queue."""
    body = given(
        name=name,
        work_pool_name=pool,
        work_queue_name=queue,
        job_variables=key_values(job_variables, "--job-variable"),
        flow_id=str(flow_id) if flow_id else None,
        paused=paused,
    )
    deployment = call(lambda client: client.create_deployment(body))
    say(f'Created deployment "{deployment.name}" ({deployment.id}).', "green", output)
    emit(deployment, output, lambda: deployment_table(deployment))


@app.command("inspect")
@connected
def inspect(deployment_id: IdArg, output: OutputOpt = Output.table) -> None:
    """Show every field of a deployment."""
    deployment = call(lambda client: client.read_deployment(deployment_id))
    emit(deployment, output, lambda: deployment_table(deployment))


def deployment_table(deployment: Deployment) -> Table:
    return fields_table(deployment, f'Deployment "{deployment.name}"')


@app.command("ls")
@connected
def ls(
    pool: Annotated[str | None, typer.Option("--pool", "-p", help="Only deployments of this work pool.")] = None,
    queue: Annotated[
        list[str] | None, typer.Option("--queue", "-q", help="Only those of this queue; repeatable.")
    ] = None,
    name: Annotated[list[str] | None, typer.Option("--name", "-n", help="Only those named so; repeatable.")] = None,
    output: OutputOpt = Output.table,
) -> None:
    """List deployments, by name."""
    deployments = call(
        lambda client: read_all(
            lambda offset: client.read_deployments(
                deployment_filter={"name": {"any_": name}} if name else None,
                work_pool_filter={"name": {"any_": [pool]}} if pool else None,
                work_queue_filter={"name": {"any_": queue}} if queue else None,
                limit=DEFAULT_LIMIT,
                offset=offset,
            )
        )
    )
    emit_list(deployments, output, deployments_table, "No deployments.")


def deployments_table(deployments: Sequence[Deployment]) -> Table:
    table = Table("Id", "Name", "Pool", "Queue", "Status", "Paused", title="Deployments")
    for deployment in deployments:
        table.add_row(
            cell(deployment.id),
            cell(deployment.name),
            cell(deployment.work_pool_name),
            cell(deployment.work_queue_name),
            cell(deployment.status),
            cell(deployment.paused),
        )
    return table
