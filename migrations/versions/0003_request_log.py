"""request log for idempotent writes

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "request_log",
        sa.Column("request_id", sa.Text(), nullable=False),
        sa.Column("op", sa.Text(), nullable=False),
        sa.Column("created", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status", sa.Integer(), nullable=True),
        sa.Column("reply", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.PrimaryKeyConstraint("request_id", name=op.f("pk_request_log")),
    )
    op.create_index(op.f("ix_request_log__created"), "request_log", ["created"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_request_log__created"), table_name="request_log")
    op.drop_table("request_log")
