"""Alembic migrations, applied by `workpools db upgrade` and at `workpools serve` start-up."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from services.db import Bounds, DbTimeouts, asyncpg_url, ensure_database

MIGRATION_LOCK = 0x776F726B  # pg_advisory_lock key: one replica migrates, the others wait


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(Path(__file__).parent))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))  # ini syntax: a URL-escaped password has %
    return config


async def upgrade(url: str, revision: str = "head", timeouts: Bounds = DbTimeouts().migration) -> None:
    """Create the database if missing, then migrate it under an advisory lock, held to the
    migration timeouts once the lock is taken (waiting for another replica's migration is not
    bounded by them: it lasts as long as that migration)."""
    await ensure_database(url)
    untimed, settings = Bounds(0, 0, 0), timeouts.server_settings()  # settings: integers (milliseconds)
    engine = create_async_engine(asyncpg_url(url), connect_args={"server_settings": untimed.server_settings()})
    try:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": MIGRATION_LOCK})
            for name, value in settings.items():  # an operator's command: three round trips are nothing
                await conn.execute(text(f"SET {name} = {value}"))
            try:
                await conn.run_sync(_upgrade_sync, url, revision)
                await conn.commit()
            except BaseException:
                await conn.rollback()  # a failed transaction runs nothing more, the unlock included
                raise
            finally:
                await conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": MIGRATION_LOCK})
    finally:
        await engine.dispose()


def _upgrade_sync(sync_conn, url: str, revision: str) -> None:
    config = alembic_config(url)
    config.attributes["connection"] = sync_conn
    command.upgrade(config, revision)
