"""a SCHEDULED run always has its scheduled time

Every way a run becomes SCHEDULED sets `next_scheduled_start_time` (the state's scheduled time,
else now); the constraint makes that a rule of the table. The poll's time bounds rely on it:
they are written as index conditions (`time <= coalesce(:before, 'infinity')`), which a run
without a time would fail even when no bound is given.

A SCHEDULED run left without a time (a row written directly in SQL) would make the validation
fail and the upgrade with it, so such runs are first given the time the service would have
written: when they became SCHEDULED (`state_timestamp`), else their expected start, else their
creation. The constraint is added unvalidated, then validated, so the table is scanned without
blocking writes.

Revision ID: 0006
Revises: 0005
"""

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

NAME = "ck_flow_run__scheduled_has_time"


def upgrade() -> None:
    op.execute(
        "UPDATE flow_run SET next_scheduled_start_time = coalesce(state_timestamp, expected_start_time, created) "
        "WHERE state_type = 'SCHEDULED' AND next_scheduled_start_time IS NULL"
    )
    op.execute(
        f"ALTER TABLE flow_run ADD CONSTRAINT {NAME} "
        "CHECK (state_type <> 'SCHEDULED' OR next_scheduled_start_time IS NOT NULL) NOT VALID"
    )
    op.execute(f"ALTER TABLE flow_run VALIDATE CONSTRAINT {NAME}")


def downgrade() -> None:
    op.drop_constraint(NAME, "flow_run", type_="check")
