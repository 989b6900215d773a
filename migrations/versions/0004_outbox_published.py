"""outbox rows know their age and their event's id

The committing replica publishes its own events and deletes their rows afterwards, by event id;
the sweep takes only rows older than a grace (left by a replica that failed to publish them).

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "event_outbox",
        sa.Column("created", sa.DateTime(timezone=True), server_default=sa.text("clock_timestamp()"), nullable=False),
    )
    op.create_index("ix_event_outbox__event_id", "event_outbox", [sa.text("(event ->> 'id')")])


def downgrade() -> None:
    op.drop_index("ix_event_outbox__event_id", table_name="event_outbox")
    op.drop_column("event_outbox", "created")
