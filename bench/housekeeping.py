"""Before and after a run: a fresh key prefix, the benchmark database (checked, dropped), the
run's Redis keys deleted."""

from __future__ import annotations

import uuid

from redis.asyncio import Redis
from sqlalchemy.engine import make_url


def new_prefix(name: str = "bench") -> str:
    """A key prefix no other run uses (so cleanup by `prefix*` touches only this run)."""
    return f"{name}{uuid.uuid4().hex[:8]}"


def _admin_dsn(url: str) -> tuple[str, str]:
    target = make_url(url)
    admin = target.set(database="postgres", drivername="postgresql")
    return admin.render_as_string(hide_password=False), target.database


def check_bench_database(url: str) -> str:
    """The database name in `url`, if it is a benchmark's (contains "bench"): benchmarks drop it."""
    name = make_url(url).database or ""
    if "bench" not in name:
        raise ValueError(
            f"database {name!r} is not a benchmark database (its name must contain 'bench'); "
            "benchmarks drop and recreate it"
        )
    return name


async def drop_database(url: str) -> None:
    """Drop the benchmark database named in `url` (connections are terminated); no error if missing."""
    import asyncpg

    check_bench_database(url)
    dsn, name = _admin_dsn(url)
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


async def delete_prefix_keys(redis_url: str, prefix: str) -> int:
    """Delete every Redis key matching `prefix*`; returns how many."""
    redis = Redis.from_url(redis_url)
    try:
        keys = [key async for key in redis.scan_iter(match=f"{prefix}*", count=1000)]
        for i in range(0, len(keys), 500):
            await redis.delete(*keys[i : i + 500])
        return len(keys)
    finally:
        await redis.aclose()


def asyncpg_dsn(database_url: str) -> str:
    """The SQLAlchemy URL of the service (postgresql+asyncpg://...) as a plain asyncpg DSN."""
    return make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)
