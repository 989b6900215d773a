"""`workpools worker …`: run a process worker (`--pool NAME`), list, heartbeat or delete workers.

The worker itself is `client.process_worker.ProcessWorker`; this module only wires its options.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.table import Table

from cli.connection import call, connected, read_all, target
from cli.output import ExitCode, Output, OutputOpt, cell, describe, emit_list, fail, say
from client import WorkPoolsError
from client.process_worker import ProcessWorker
from client.transport import REFUSALS, UNREACHABLE
from schemas.common import DEFAULT_LIMIT
from schemas.scheduling import WorkerFlowRun
from schemas.settings import Settings
from schemas.workers import Worker

app = typer.Typer(
    help="Run a process worker (worker --pool NAME), or list, heartbeat and delete a pool's workers.",
    no_args_is_help=True,
)

NameArg = Annotated[str, typer.Argument(help="The worker's name.", show_default=False)]
PoolOpt = Annotated[str, typer.Option("--pool", "-p", help="The work pool.", show_default=False)]


@app.callback(invoke_without_command=True)
@connected
def run(
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
    claim: Annotated[
        bool,
        typer.Option(
            "--claim/--no-claim",
            help="Claim mode: leased runs, long polls, self-fencing (docs/claims.md); "
            "--no-claim polls as Prefect's worker does.",
        ),
    ] = True,
    http_port: Annotated[
        int | None,
        typer.Option(
            envvar="WORKPOOLS_WORKER_HTTP_PORT",
            help="Serve /healthz and /readyz on this port (on WORKPOOLS_HTTP_HOST; default: none).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Run a process worker: poll the pool, run each flow run's command, report how it ended.

    SIGTERM or Ctrl-C stops it: running commands get SIGTERM (SIGKILL after --grace-seconds)
    and every run it did not finish goes back to SCHEDULED for another worker.
    """
    if ctx.invoked_subcommand is not None:
        return
    if pool is None:
        typer.echo(ctx.get_help())
        fail("Missing option --pool.", ExitCode.USAGE)
    from observability.logs import configure_logging
    from observability.worker import run_with_probes

    settings = Settings()
    configure_logging(log_level, settings.log_format)
    where = target()
    worker = ProcessWorker(
        pool,
        queue,
        limit=limit,
        name=name,
        heartbeat_interval=heartbeat_interval,
        poll_interval=poll_interval,
        prefetch_seconds=prefetch_seconds,
        grace_seconds=grace_seconds,
        redis_url=where.redis_url,
        prefix=where.prefix,
        claim=claim,
    )
    try:
        asyncio.run(run_with_probes(worker, settings.http_host, http_port))
    except WorkPoolsError as exc:
        fail(describe(exc.detail))
    except REFUSALS as exc:
        fail(f"Redis at {where.address} refused this worker: {exc}", ExitCode.UNREACHABLE)
    except UNREACHABLE as exc:
        fail(f"Redis at {where.address} is not reachable: {exc}", ExitCode.UNREACHABLE)


@app.command("ls")
@connected
def ls(pool: PoolOpt, output: OutputOpt = Output.table) -> None:
    """List a pool's workers, latest heartbeat first."""
    workers = call(
        lambda client: read_all(
            lambda offset: client.read_workers_for_work_pool(pool, offset=offset, limit=DEFAULT_LIMIT)
        )
    )
    emit_list(workers, output, lambda rows: workers_table(pool, rows), f'No workers in pool "{pool}".')


@app.command("heartbeat")
@connected
def heartbeat(
    name: NameArg,
    pool: PoolOpt,
    interval: Annotated[
        int | None, typer.Option("--heartbeat-interval", min=1, help="Seconds until its next heartbeat is due.")
    ] = None,
) -> None:
    """Send one heartbeat for a worker (creates it; marks the pool READY)."""
    call(lambda client: client.send_worker_heartbeat(pool, name, heartbeat_interval_seconds=interval))
    say(f'Recorded a heartbeat of worker "{name}" in pool "{pool}".')


@app.command("poll")
@connected
def poll(
    pool: PoolOpt,
    queue: Annotated[
        list[str] | None, typer.Option("--queue", "-q", help="A queue to poll; repeatable (default: all).")
    ] = None,
    limit: Annotated[int | None, typer.Option(min=0, max=DEFAULT_LIMIT, help="At most this many runs.")] = None,
    claim: Annotated[
        str | None,
        typer.Option("--claim", help="Claim mode: lease the runs to this worker name.", show_default=False),
    ] = None,
    lease_seconds: Annotated[float, typer.Option(min=1, max=3600, help="How long a claim's lease lasts.")] = 30.0,
    output: OutputOpt = Output.table,
) -> None:
    """Poll as a worker would: the runs due now that it may start. Counts as a poll (queues
    and deployments become READY); with --claim the runs are leased. See `work-pool preview`
    for a read-only look."""
    runs = call(
        lambda client: client.get_scheduled_flow_runs_for_work_pool(
            pool,
            queue,
            scheduled_before=datetime.now(UTC),
            limit=limit,
            claim=claim is not None,
            worker_name=claim,
            lease_seconds=lease_seconds,
        )
    )
    emit_list(runs, output, polled_table, f'No runs due in pool "{pool}".')


@app.command("delete")
@connected
def delete(name: NameArg, pool: PoolOpt) -> None:
    """Delete a worker from a pool (a worker that heartbeats again comes back)."""
    call(lambda client: client.delete_worker(pool, name))
    say(f'Deleted worker "{name}" of pool "{pool}".')


def workers_table(pool: str, workers: Sequence[Worker]) -> Table:
    table = Table("Name", "Status", "Last heartbeat", "Heartbeat interval (s)", title=cell(f'Workers of "{pool}"'))
    for worker in workers:
        table.add_row(
            cell(worker.name),
            cell(worker.status),
            cell(worker.last_heartbeat_time),
            cell(worker.heartbeat_interval_seconds),
        )
    return table


def polled_table(runs: Sequence[WorkerFlowRun]) -> Table:
    table = Table("Id", "Name", "Queue", "Scheduled", "Lease token", title="Runs handed out")
    for run in runs:
        table.add_row(
            cell(run.flow_run.id),
            cell(run.flow_run.name),
            cell(run.flow_run.work_queue_name),
            cell(run.flow_run.next_scheduled_start_time),
            cell(run.lease.token if run.lease else None),
        )
    return table
