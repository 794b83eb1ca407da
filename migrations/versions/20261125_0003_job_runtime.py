"""job runtime v2: time limits, unit fence, waiting reason, status transitions enforced

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25 23:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

# A frozen copy of core.lifecycle.states.ALLOWED_TRANSITIONS as of this revision; a test
# checks the live database against the module, so a change there needs a new migration.
TRANSITIONS = [
    ("cancelled", "queued"),
    ("failed", "queued"),
    ("queued", "cancelled"),
    ("queued", "failed"),
    ("queued", "running"),
    ("running", "cancelled"),
    ("running", "failed"),
    ("running", "queued"),
    ("running", "succeeded"),
]


def upgrade() -> None:
    op.add_column(
        "jobs",
        sa.Column("time_limit_seconds", sa.Double(), server_default="3600", nullable=False),
    )
    op.add_column("jobs", sa.Column("run_deadline_at", sa.DateTime(timezone=True)))
    op.add_column(
        "jobs", sa.Column("unit_seq", sa.BigInteger(), server_default="0", nullable=False)
    )
    op.add_column("jobs", sa.Column("waiting_reason", sa.Text()))
    pairs = ", ".join(f"('{source}', '{target}')" for source, target in TRANSITIONS)
    op.execute(
        f"""
        CREATE FUNCTION conveyor_check_job_transition() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            IF (OLD.status, NEW.status) NOT IN (VALUES {pairs}) THEN
                RAISE EXCEPTION 'job % cannot go from % to %', OLD.id, OLD.status, NEW.status
                    USING ERRCODE = 'check_violation';
            END IF;
            RETURN NEW;
        END
        $$
        """
    )
    op.execute(
        """
        CREATE TRIGGER jobs_status_transition BEFORE UPDATE OF status ON jobs
        FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status)
        EXECUTE FUNCTION conveyor_check_job_transition()
        """
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER jobs_status_transition ON jobs")
    op.execute("DROP FUNCTION conveyor_check_job_transition()")
    op.drop_column("jobs", "waiting_reason")
    op.drop_column("jobs", "unit_seq")
    op.drop_column("jobs", "run_deadline_at")
    op.drop_column("jobs", "time_limit_seconds")
