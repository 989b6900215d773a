"""flow run leases for claim mode

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(sa.schema.CreateSequence(sa.Sequence("flow_run_lease_token")))
    op.add_column("flow_run", sa.Column("lease_owner", sa.Text(), nullable=True))
    op.add_column("flow_run", sa.Column("lease_token", sa.BigInteger(), nullable=True))
    op.add_column("flow_run", sa.Column("lease_expires", sa.DateTime(timezone=True), nullable=True))
    op.add_column("flow_run", sa.Column("lease_seconds", sa.Float(), nullable=True))
    op.create_index(
        "ix_flow_run__lease_owner",
        "flow_run",
        ["lease_owner"],
        unique=False,
        postgresql_where=sa.text("lease_owner IS NOT NULL"),
    )
    op.create_index(
        "ix_flow_run__leased",
        "flow_run",
        ["lease_expires", "work_queue_id"],
        unique=False,
        postgresql_where=sa.text("lease_expires IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_flow_run__leased", table_name="flow_run", postgresql_where=sa.text("lease_expires IS NOT NULL"))
    op.drop_index(
        "ix_flow_run__lease_owner", table_name="flow_run", postgresql_where=sa.text("lease_owner IS NOT NULL")
    )
    op.drop_column("flow_run", "lease_seconds")
    op.drop_column("flow_run", "lease_expires")
    op.drop_column("flow_run", "lease_token")
    op.drop_column("flow_run", "lease_owner")
    op.execute(sa.schema.DropSequence(sa.Sequence("flow_run_lease_token")))
