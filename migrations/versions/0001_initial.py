"""work pools, queues, workers, deployments, flow runs, outbox

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "event_outbox",
        sa.Column("seq", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("event", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_event_outbox")),
    )
    op.create_table(
        "work_pool",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("created", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated", sa.DateTime(timezone=True), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("type", sa.Text(), nullable=False),
        sa.Column("base_job_template", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("is_paused", sa.Boolean(), nullable=False),
        sa.Column("concurrency_limit", sa.Integer(), nullable=True),
        sa.Column("status", sa.Text(), server_default="NOT_READY", nullable=False),
        sa.Column("default_queue_id", sa.Uuid(), nullable=True),
        sa.Column("storage_configuration", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("last_transitioned_status_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_status_event_id", sa.Uuid(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_work_pool")),
        sa.UniqueConstraint("name", name=op.f("uq_work_pool__name")),
    )
    op.create_table(
        "work_queue",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("created", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated", sa.DateTime(timezone=True), nullable=False),
        sa.Column("work_pool_id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("description", sa.Text(), server_default="", nullable=False),
        sa.Column("is_paused", sa.Boolean(), nullable=False),
        sa.Column("concurrency_limit", sa.Integer(), nullable=True),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("filter", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("last_polled", sa.DateTime(timezone=True), nullable=True),
        sa.Column("status", sa.Text(), server_default="NOT_READY", nullable=False),
        sa.ForeignKeyConstraint(
            ["work_pool_id"], ["work_pool.id"], name=op.f("fk_work_queue__work_pool_id__work_pool"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_work_queue")),
        sa.UniqueConstraint("work_pool_id", "name", name=op.f("uq_work_queue__work_pool_id_name")),
        sa.UniqueConstraint(
            "work_pool_id",
            "priority",
            deferrable=True,
            initially="DEFERRED",
            name=op.f("uq_work_queue__work_pool_id_priority"),
        ),
    )
    # pool -> default queue closes a cycle: added once both tables exist
    op.create_foreign_key(
        op.f("fk_work_pool__default_queue_id__work_queue"),
        "work_pool",
        "work_queue",
        ["default_queue_id"],
        ["id"],
        deferrable=True,
        initially="DEFERRED",
    )
    op.create_table(
        "worker",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("created", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated", sa.DateTime(timezone=True), nullable=False),
        sa.Column("work_pool_id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("last_heartbeat_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("heartbeat_interval_seconds", sa.Integer(), nullable=True),
        sa.Column("status", sa.Text(), server_default="OFFLINE", nullable=False),
        sa.ForeignKeyConstraint(
            ["work_pool_id"], ["work_pool.id"], name=op.f("fk_worker__work_pool_id__work_pool"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_worker")),
        sa.UniqueConstraint("work_pool_id", "name", name=op.f("uq_worker__work_pool_id_name")),
    )
    op.create_index(
        op.f("ix_worker__work_pool_id_last_heartbeat_time"),
        "worker",
        ["work_pool_id", "last_heartbeat_time"],
        unique=False,
    )
    op.create_table(
        "deployment",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("created", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated", sa.DateTime(timezone=True), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("flow_id", sa.Uuid(), nullable=True),
        sa.Column("work_queue_id", sa.Uuid(), nullable=True),
        sa.Column("paused", sa.Boolean(), server_default="false", nullable=False),
        sa.Column("status", sa.Text(), server_default="NOT_READY", nullable=False),
        sa.Column("last_polled", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "job_variables",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["work_queue_id"],
            ["work_queue.id"],
            name=op.f("fk_deployment__work_queue_id__work_queue"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_deployment")),
    )
    op.create_index(op.f("ix_deployment__work_queue_id"), "deployment", ["work_queue_id"], unique=False)
    op.create_table(
        "flow_run",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("created", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated", sa.DateTime(timezone=True), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("flow_id", sa.Uuid(), nullable=True),
        sa.Column("deployment_id", sa.Uuid(), nullable=True),
        sa.Column("work_queue_id", sa.Uuid(), nullable=True),
        sa.Column("work_queue_name", sa.Text(), nullable=True),
        sa.Column("state_type", sa.Text(), nullable=False),
        sa.Column("state_name", sa.Text(), nullable=False),
        sa.Column("state_id", sa.Uuid(), nullable=True),
        sa.Column("state_message", sa.Text(), nullable=True),
        sa.Column("state_timestamp", sa.DateTime(timezone=True), nullable=True),
        sa.Column("next_scheduled_start_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("expected_start_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("start_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("end_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("run_count", sa.Integer(), server_default="0", nullable=False),
        sa.Column(
            "empirical_policy",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.Column(
            "parameters", postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'::jsonb"), nullable=False
        ),
        sa.Column(
            "job_variables",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.Column(
            "tags", postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'[]'::jsonb"), nullable=False
        ),
        sa.ForeignKeyConstraint(
            ["deployment_id"],
            ["deployment.id"],
            name=op.f("fk_flow_run__deployment_id__deployment"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["work_queue_id"],
            ["work_queue.id"],
            name=op.f("fk_flow_run__work_queue_id__work_queue"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_flow_run")),
    )
    op.create_index(
        "ix_flow_run__active",
        "flow_run",
        ["work_queue_id"],
        unique=False,
        postgresql_where=sa.text("state_type IN ('PENDING', 'RUNNING')"),
    )
    op.create_index(op.f("ix_flow_run__deployment_id"), "flow_run", ["deployment_id"], unique=False)
    op.create_index(
        "ix_flow_run__scheduled",
        "flow_run",
        ["work_queue_id", "next_scheduled_start_time", "id"],
        unique=False,
        postgresql_where=sa.text("state_type = 'SCHEDULED'"),
    )


def downgrade() -> None:
    op.drop_index("ix_flow_run__scheduled", table_name="flow_run", postgresql_where=sa.text("state_type = 'SCHEDULED'"))
    op.drop_index(op.f("ix_flow_run__deployment_id"), table_name="flow_run")
    op.drop_index(
        "ix_flow_run__active", table_name="flow_run", postgresql_where=sa.text("state_type IN ('PENDING', 'RUNNING')")
    )
    op.drop_table("flow_run")
    op.drop_index(op.f("ix_deployment__work_queue_id"), table_name="deployment")
    op.drop_table("deployment")
    op.drop_index(op.f("ix_worker__work_pool_id_last_heartbeat_time"), table_name="worker")
    op.drop_table("worker")
    op.drop_constraint(op.f("fk_work_pool__default_queue_id__work_queue"), "work_pool", type_="foreignkey")
    op.drop_table("work_queue")
    op.drop_table("work_pool")
    op.drop_table("event_outbox")
