"""The PostgreSQL schema (SQLAlchemy Core); the one metadata Alembic migrations are checked against."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Identity,
    Index,
    Integer,
    MetaData,
    Sequence,
    Table,
    Text,
    UniqueConstraint,
    Uuid,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.sql.schema import SchemaItem

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s__%(column_0_N_name)s",
        "uq": "uq_%(table_name)s__%(column_0_N_name)s",
        "fk": "fk_%(table_name)s__%(column_0_name)s__%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)


def _timestamp(name: str, nullable: bool = True) -> Column[datetime]:
    return Column(name, DateTime(timezone=True), nullable=nullable)


def _entity(name: str, *columns: SchemaItem, **kwargs: Any) -> Table:
    """A table with Prefect's common columns: `id`, `created`, `updated`."""
    return Table(
        name,
        metadata,
        Column("id", Uuid, primary_key=True),
        _timestamp("created", nullable=False),
        _timestamp("updated", nullable=False),
        *columns,
        **kwargs,
    )


work_pool = _entity(
    "work_pool",
    Column("name", Text, nullable=False, unique=True),
    Column("description", Text),
    Column("type", Text, nullable=False),
    Column("base_job_template", JSONB, nullable=False),
    Column("is_paused", Boolean, nullable=False),
    Column("concurrency_limit", Integer),
    Column("status", Text, nullable=False, server_default="NOT_READY"),
    # Deferred so a pool and its default queue are inserted in one transaction, either order;
    # deleting the default queue alone fails at commit (the service refuses it up front).
    Column(
        "default_queue_id",
        Uuid,
        ForeignKey("work_queue.id", use_alter=True, deferrable=True, initially="DEFERRED"),
    ),
    Column("storage_configuration", JSONB, nullable=False),
    _timestamp("last_transitioned_status_at"),
    Column("last_status_event_id", Uuid),
    # The priority the next queue created without one gets, while the pool's priorities are
    # exactly 1..n; NULL when unknown (docs/priorities.md#concurrency).
    Column("next_priority", Integer),
)

work_queue = _entity(
    "work_queue",
    Column("work_pool_id", Uuid, ForeignKey("work_pool.id", ondelete="CASCADE"), nullable=False),
    Column("name", Text, nullable=False),
    Column("description", Text, nullable=False, server_default=""),
    Column("is_paused", Boolean, nullable=False),
    Column("concurrency_limit", Integer),
    Column("priority", Integer, nullable=False),
    Column("filter", JSONB),
    _timestamp("last_polled"),
    Column("status", Text, nullable=False, server_default="NOT_READY"),
    UniqueConstraint("work_pool_id", "name"),
    # Prefect does not enforce this and ends up with equal priorities under concurrent creates.
    # Deferred: a re-balance passes through transient duplicates inside its transaction.
    UniqueConstraint("work_pool_id", "priority", deferrable=True, initially="DEFERRED"),
)

worker = _entity(
    "worker",
    Column("work_pool_id", Uuid, ForeignKey("work_pool.id", ondelete="CASCADE"), nullable=False),
    Column("name", Text, nullable=False),
    _timestamp("last_heartbeat_time", nullable=False),
    Column("heartbeat_interval_seconds", Integer),
    Column("status", Text, nullable=False, server_default="OFFLINE"),
    UniqueConstraint("work_pool_id", "name"),
    Index(None, "work_pool_id", "last_heartbeat_time"),
)

deployment = _entity(
    "deployment",
    Column("name", Text, nullable=False),
    Column("flow_id", Uuid),
    Column("work_queue_id", Uuid, ForeignKey("work_queue.id", ondelete="SET NULL"), index=True),
    Column("paused", Boolean, nullable=False, server_default="false"),
    Column("status", Text, nullable=False, server_default="NOT_READY"),
    _timestamp("last_polled"),
    Column("job_variables", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
)

flow_run = _entity(
    "flow_run",
    Column("name", Text, nullable=False),
    Column("flow_id", Uuid),
    Column("deployment_id", Uuid, ForeignKey("deployment.id", ondelete="SET NULL"), index=True),
    Column("work_queue_id", Uuid, ForeignKey("work_queue.id", ondelete="SET NULL")),
    Column("work_queue_name", Text),
    Column("state_type", Text, nullable=False),
    Column("state_name", Text, nullable=False),
    Column("state_id", Uuid),
    Column("state_message", Text),
    _timestamp("state_timestamp"),
    _timestamp("next_scheduled_start_time"),
    _timestamp("expected_start_time"),
    _timestamp("start_time"),
    _timestamp("end_time"),
    Column("run_count", Integer, nullable=False, server_default="0"),
    Column("empirical_policy", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    Column("parameters", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    Column("job_variables", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    Column("tags", JSONB, nullable=False, server_default=text("'[]'::jsonb")),
    # Claim mode: the worker holding the run, its fencing token and the lease's end.
    Column("lease_owner", Text),
    Column("lease_token", BigInteger),
    _timestamp("lease_expires"),
    Column("lease_seconds", Float),
    # The poll's time bounds are index conditions that a run without a time would fail.
    CheckConstraint(
        "state_type <> 'SCHEDULED' OR next_scheduled_start_time IS NOT NULL",
        name="ck_flow_run__scheduled_has_time",
    ),
    # The poll walks this per queue in time order (see services/scheduling.py).
    Index(
        "ix_flow_run__scheduled",
        "work_queue_id",
        "next_scheduled_start_time",
        "id",
        postgresql_where=text("state_type = 'SCHEDULED'"),
    ),
    # Claim mode: leased runs count as slots; expired leases are swept.
    Index("ix_flow_run__leased", "lease_expires", "work_queue_id", postgresql_where=text("lease_expires IS NOT NULL")),
    Index("ix_flow_run__lease_owner", "lease_owner", postgresql_where=text("lease_owner IS NOT NULL")),
    # Slot counting: runs holding a concurrency slot, per queue.
    Index(
        "ix_flow_run__active",
        "work_queue_id",
        postgresql_where=text("state_type IN ('PENDING', 'RUNNING')"),
    ),
)

lease_tokens = Sequence("flow_run_lease_token", metadata=metadata)
"""Fencing tokens: every claim takes the next one, so a stale holder's token never matches."""

request_log = Table(
    "request_log",
    metadata,
    Column("request_id", Text, primary_key=True),
    Column("op", Text, nullable=False),
    _timestamp("created", nullable=False),
    Column("status", Integer),
    Column("reply", JSONB),
    Index(None, "created"),
)
"""Idempotent writes: a request id executes once; a repeat gets the stored reply."""

event_outbox = Table(
    "event_outbox",
    metadata,
    Column("seq", BigInteger, Identity(), primary_key=True),
    Column("event", JSONB, nullable=False),
    Column("created", DateTime(timezone=True), nullable=False, server_default=text("clock_timestamp()")),
    Index("ix_event_outbox__event_id", text("(event ->> 'id')")),
)
"""Events of committed changes not yet known to be on the stream (replica/outbox.py)."""
