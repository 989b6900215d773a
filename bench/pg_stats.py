"""PostgreSQL statistics a benchmark reads: row writes per table, and waiting until the lazily
published counters settle."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any


async def all_table_writes(conn: Any) -> int:
    """Rows inserted + updated + deleted in every table of the connection's database."""
    return int(
        await conn.fetchval("SELECT coalesce(sum(n_tup_ins + n_tup_upd + n_tup_del), 0) FROM pg_stat_user_tables")
    )


async def table_writes(conn: Any, table: str) -> dict[str, int]:
    """Cumulative row writes of one table (pg_stat_user_tables): ins, upd, hot_upd, del."""
    row = await conn.fetchrow(
        "SELECT n_tup_ins, n_tup_upd, n_tup_hot_upd, n_tup_del FROM pg_stat_user_tables WHERE relname = $1", table
    )
    return (
        {"ins": row[0], "upd": row[1], "hot_upd": row[2], "del": row[3]}
        if row
        else {"ins": 0, "upd": 0, "hot_upd": 0, "del": 0}
    )


PG_STATS_IDLE_FLUSH = 10.5
"""Seconds after its last transaction by which an idle PostgreSQL 15 backend has published its
statistics: a backend reports when a transaction ends at least 1 s after its previous report,
otherwise (PGSTAT_IDLE_INTERVAL) 10 s later if it stays idle."""


async def settled(
    read: Callable[[], Awaitable[Any]],
    *,
    quiet: float = 2.0,
    max_wait: float = 12.0,
    every: float = 0.5,
    not_before: float | None = None,
) -> tuple[Any, bool, float]:
    """Read a statistic until it has not changed for `quiet` seconds (and, with `not_before`, a
    time.monotonic() value, not before then), at most `max_wait` seconds.

    PostgreSQL 15 publishes table and database counters lazily (see PG_STATS_IDLE_FLUSH): pass
    not_before = last activity + PG_STATS_IDLE_FLUSH for exact counts. Returns (value, settled,
    seconds waited)."""
    started = time.monotonic()
    value = await read()
    since = time.monotonic()
    while True:
        await asyncio.sleep(every)
        now = time.monotonic()
        current = await read()
        if current != value:
            value, since = current, now
        elif now - since >= quiet and (not_before is None or now >= not_before):
            return value, True, now - started
        if now - started >= max_wait:
            return value, False, now - started
