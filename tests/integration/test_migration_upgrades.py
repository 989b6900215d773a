"""Upgrades of a database that already holds data: a migration that adds a rule the rows must
keep first brings the rows that break it into line, so the upgrade (and the replica's start-up,
which runs it) does not fail on them."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import asyncpg

import migrations
from services.db import connect_options

BECAME_SCHEDULED = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


async def test_scheduled_runs_without_a_time_are_given_one_before_the_rule_is_checked(empty_database_url):
    await migrations.upgrade(empty_database_url, "0005")
    conn = await asyncpg.connect(**connect_options(empty_database_url))
    try:
        created = BECAME_SCHEDULED - timedelta(hours=1)
        runs = {
            "scheduled, no time": ("SCHEDULED", BECAME_SCHEDULED, None),
            "scheduled, only created": ("SCHEDULED", None, None),
            "scheduled, with its time": ("SCHEDULED", BECAME_SCHEDULED, BECAME_SCHEDULED + timedelta(days=1)),
            "running, no time": ("RUNNING", BECAME_SCHEDULED, None),
        }
        for name, (state, state_timestamp, due) in runs.items():
            await conn.execute(
                "INSERT INTO flow_run (id, created, updated, name, state_type, state_name, state_timestamp,"
                " next_scheduled_start_time) VALUES ($1, $2, $2, $3, $4, $4, $5, $6)",
                uuid.uuid4(),
                created,
                name,
                state,
                state_timestamp,
                due,
            )

        await migrations.upgrade(empty_database_url, "0006")

        rows = await conn.fetch("SELECT name, next_scheduled_start_time AS due FROM flow_run")
        assert {row["name"]: row["due"] for row in rows} == {
            "scheduled, no time": BECAME_SCHEDULED,
            "scheduled, only created": created,
            "scheduled, with its time": BECAME_SCHEDULED + timedelta(days=1),
            "running, no time": None,
        }
        assert await conn.fetchval("SELECT version_num FROM alembic_version") == "0006"
        assert await conn.fetchval(
            "SELECT convalidated FROM pg_constraint WHERE conname = 'ck_flow_run__scheduled_has_time'"
        )
    finally:
        await conn.close()
