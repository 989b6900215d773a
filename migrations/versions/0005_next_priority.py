"""a pool remembers the priority its next queue gets

`work_pool.next_priority` is the priority a queue created without one gets while the pool's
priorities are exactly 1..n (NULL when unknown); a create then finds its priority from the pool
row it locks, without reading the pool's queues. Existing pools start unknown: their next create
finds the first free priority as before and sets it.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("work_pool", sa.Column("next_priority", sa.Integer(), nullable=True))


def downgrade() -> None:
    op.drop_column("work_pool", "next_priority")
