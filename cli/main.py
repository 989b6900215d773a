"""The `workpools` command: run a replica, migrate the database, operate pools, queues, workers,
deployments, flow runs, events and dead letters, check health, write docs.

Exit codes (`cli.output.ExitCode`): 0 ok; 1 not found or refused (404, 409, 403, 422, a state
not accepted); 2 usage; 3 unreachable (Redis, PostgreSQL, or no replica answered in time);
4 the service failed (503, 500); 130 interrupted.
"""

from __future__ import annotations

import asyncio
import json
import logging
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Annotated

import typer

from cli import dead, deployments, events, flow_runs, health, pools, queues, workers
from cli.connection import PrefixOpt, RedisUrlOpt, TimeoutOpt, remember
from cli.output import ExitCode, fail, say, waiting
from schemas.settings import Settings

cli = typer.Typer(
    help="workpools: Prefect-compatible work pools over Redis and PostgreSQL.",
    no_args_is_help=True,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
db_cli = typer.Typer(help="Database schema.", no_args_is_help=True)
docs_cli = typer.Typer(help="Documents generated from the code.", no_args_is_help=True)

for noun, alias, module in (("work-pool", "pool", pools), ("work-queue", "queue", queues)):
    cli.add_typer(module.app, name=noun)
    cli.add_typer(module.app, name=alias, help=f"Alias of {noun}.")
cli.add_typer(workers.app, name="worker")
cli.add_typer(deployments.app, name="deployment")
cli.add_typer(flow_runs.app, name="flow-run")
cli.add_typer(events.app, name="events")
cli.add_typer(dead.app, name="dead")
cli.command("health")(health.health)
cli.add_typer(db_cli, name="db")
cli.add_typer(docs_cli, name="docs")


def package_version() -> str:
    try:
        return version("workpools")
    except PackageNotFoundError:  # run from a source tree that was not installed
        return "unknown"


def show_version(asked: bool) -> None:
    if asked:
        typer.echo(f"workpools {package_version()}")
        raise typer.Exit()


@cli.callback()
def root(
    redis_url: RedisUrlOpt = None,
    prefix: PrefixOpt = None,
    timeout: TimeoutOpt = None,
    _version: Annotated[
        bool,
        typer.Option("--version", callback=show_version, is_eager=True, help="Print the version and exit."),
    ] = False,
) -> None:
    """workpools: Prefect-compatible work pools over Redis and PostgreSQL.

    Exit codes: 0 ok, 1 not found or refused, 2 usage, 3 unreachable (Redis, PostgreSQL, no
    replica answered), 4 the service failed, 130 interrupted.
    """
    remember(redis_url, prefix, timeout)


@cli.command()
def serve(
    log_level: str = typer.Option("INFO", help="Python logging level."),
    migrate: bool = typer.Option(True, help="Apply migrations before serving."),
) -> None:
    """Run one replica: every subscriber and background loop. Start more for scale."""
    from observability.logs import configure_logging
    from replica.serve import Refused, run, serve_forever

    settings = Settings()
    configure_logging(log_level, settings.log_format, settings.consumer_name)
    if migrate:
        apply_migrations(settings, timeout=30.0)
    try:
        run(serve_forever(settings))
    except Refused as refused:
        logging.getLogger("workpools").error("%s", refused)
        raise typer.Exit(int(ExitCode.UNREACHABLE)) from None


@db_cli.command("upgrade")
def db_upgrade(
    timeout: Annotated[float, typer.Option(min=0.1, help="Seconds to wait for PostgreSQL to answer.")] = 10.0,
) -> None:
    """Create the database if missing and apply every migration (safe to run concurrently).

    Reads WORKPOOLS_DATABASE_URL, like the service.
    """
    apply_migrations(Settings(), timeout=timeout)
    say("database is up to date")


def apply_migrations(settings: Settings, timeout: float) -> None:
    """Migrate, or say in one line why not (exit 3 when PostgreSQL cannot be reached)."""
    import migrations
    from services.db import DbTimeouts, ensure_database

    database_url = settings.database_url
    where = database_address(database_url)

    async def run() -> None:
        try:
            await asyncio.wait_for(ensure_database(database_url), timeout)
        except TimeoutError:
            fail(f"PostgreSQL at {where} did not answer within {timeout} s.", ExitCode.UNREACHABLE)
        await migrations.upgrade(database_url, timeouts=DbTimeouts.from_settings(settings).migration)

    try:
        with waiting(f"Migrating the database at {where}…"):
            asyncio.run(run())
    except KeyboardInterrupt:
        fail("Interrupted.", ExitCode.INTERRUPTED)
    except (typer.Exit, SystemExit):
        raise
    except Exception as exc:  # one line, never a traceback: the cause is in the message
        cause = exc.__cause__ or exc
        reason = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
        if isinstance(cause, OSError) or "not reachable" in str(exc):
            fail(f"PostgreSQL at {where} is not reachable: {reason}", ExitCode.UNREACHABLE)
        fail(f"Migrating the database at {where} failed: {type(cause).__name__}: {reason}", ExitCode.SERVICE_ERROR)


def database_address(url: str) -> str:
    """host:port/database of a database URL, without credentials (safe to print)."""
    from sqlalchemy.engine import make_url

    try:
        parsed = make_url(url)
    except Exception:
        return "(an unreadable WORKPOOLS_DATABASE_URL)"
    return f"{parsed.host or 'localhost'}:{parsed.port or 5432}/{parsed.database or ''}"


@docs_cli.command("asyncapi")
def docs_asyncapi(
    output: Path = typer.Option(Path("docs/asyncapi.json"), "--output", "-o", help="Where to write it."),
) -> None:
    """Write the AsyncAPI 3 document of the service, replies included, as JSON.

    Streams are named with WORKPOOLS_PREFIX and the server is WORKPOOLS_REDIS_URL's host.
    """
    from replica.asyncapi import asyncapi_document

    document = asyncapi_document(Settings())
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    typer.echo(f"wrote {output}")


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
