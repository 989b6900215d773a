"""The `workpools` command: run a replica, migrate the database, administer pools."""

from __future__ import annotations

import asyncio
import logging

import typer

import migrations
from handlers.settings import Settings

cli = typer.Typer(help="workpools: Prefect-compatible work pools over Redis and PostgreSQL.", no_args_is_help=True)
db_cli = typer.Typer(help="Database schema.", no_args_is_help=True)
cli.add_typer(db_cli, name="db")


@cli.command()
def serve(
    log_level: str = typer.Option("INFO", help="Python logging level."),
    migrate: bool = typer.Option(True, help="Apply migrations before serving."),
) -> None:
    """Run one replica: every subscriber and background loop. Start more for scale."""
    from handlers.app import build_app

    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = Settings()
    if migrate:
        asyncio.run(migrations.upgrade(settings.database_url))
    asyncio.run(build_app(settings).run())


@db_cli.command("upgrade")
def db_upgrade() -> None:
    """Create the database if missing and apply every migration (safe to run concurrently)."""
    asyncio.run(migrations.upgrade(Settings().database_url))
    typer.echo("database is up to date")


def main() -> None:
    cli()
