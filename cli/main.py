"""The `workpools` command: run a replica, migrate the database, administer pools, write docs."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

import typer

from cli import admin
from schemas.settings import Settings

cli = typer.Typer(help="workpools: Prefect-compatible work pools over Redis and PostgreSQL.", no_args_is_help=True)
db_cli = typer.Typer(help="Database schema.", no_args_is_help=True)
docs_cli = typer.Typer(help="Documents generated from the code.", no_args_is_help=True)
cli.add_typer(db_cli, name="db")
admin.register(cli)
cli.add_typer(docs_cli, name="docs")


@cli.command()
def serve(
    log_level: str = typer.Option("INFO", help="Python logging level."),
    migrate: bool = typer.Option(True, help="Apply migrations before serving."),
) -> None:
    """Run one replica: every subscriber and background loop. Start more for scale."""
    import migrations
    from observability.logs import configure_logging
    from replica.serve import Refused, run, serve_forever

    settings = Settings()
    configure_logging(log_level, settings.log_format, settings.consumer_name)
    if migrate:
        asyncio.run(migrations.upgrade(settings.database_url))
    try:
        run(serve_forever(settings))
    except Refused as refused:
        logging.getLogger("workpools").error("%s", refused)
        raise typer.Exit(3) from None


@db_cli.command("upgrade")
def db_upgrade() -> None:
    """Create the database if missing and apply every migration (safe to run concurrently)."""
    import migrations

    asyncio.run(migrations.upgrade(Settings().database_url))
    typer.echo("database is up to date")


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
