"""Alembic migrations, applied by `workpools db upgrade` and at `workpools serve` start-up."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from services.db import asyncpg_url, ensure_database

MIGRATION_LOCK = 0x776F726B  # pg_advisory_lock key: one replica migrates, the others wait


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(Path(__file__).parent))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))  # ini syntax: a URL-escaped password has %
    return config


async def upgrade(url: str, revision: str = "head") -> None:
    """Create the database if missing, then migrate it under an advisory lock."""
    await ensure_database(url)
    engine = create_async_engine(asyncpg_url(url))
    try:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": MIGRATION_LOCK})
            try:
                await conn.run_sync(_upgrade_sync, url, revision)
                await conn.commit()
            finally:
                await conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": MIGRATION_LOCK})
    finally:
        await engine.dispose()


def _upgrade_sync(sync_conn, url: str, revision: str) -> None:
    config = alembic_config(url)
    config.attributes["connection"] = sync_conn
    command.upgrade(config, revision)
