"""job_counters: jobs by status maintained by triggers (O(1) metrics scrapes)

Revision ID: 1000_job_counters
Revises: 0004
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "1000_job_counters"
down_revision = "0004"
branch_labels = None
depends_on = None

# A job "waits in the outbox" while queued and not yet published.
_WAITING = "status = 'queued' AND dispatched_at IS NULL"

_FUNCTIONS = f"""
CREATE FUNCTION conveyor_count_inserted_jobs() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO job_counter_deltas (name, delta)
    SELECT status, count(*) FROM new_jobs GROUP BY status
    UNION ALL
    SELECT 'undispatched', count(*) FROM new_jobs WHERE {_WAITING} HAVING count(*) > 0;
    RETURN NULL;
END $$;

CREATE FUNCTION conveyor_count_deleted_jobs() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO job_counter_deltas (name, delta)
    SELECT status, -count(*) FROM old_jobs GROUP BY status
    UNION ALL
    SELECT 'undispatched', -count(*) FROM old_jobs WHERE {_WAITING} HAVING count(*) > 0;
    RETURN NULL;
END $$;

CREATE FUNCTION conveyor_count_updated_job() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    was_waiting boolean := OLD.status = 'queued' AND OLD.dispatched_at IS NULL;
    is_waiting boolean := NEW.status = 'queued' AND NEW.dispatched_at IS NULL;
BEGIN
    IF OLD.status IS DISTINCT FROM NEW.status THEN
        INSERT INTO job_counter_deltas (name, delta) VALUES (OLD.status, -1), (NEW.status, 1);
    END IF;
    IF was_waiting <> is_waiting THEN
        INSERT INTO job_counter_deltas (name, delta)
        VALUES ('undispatched', CASE WHEN is_waiting THEN 1 ELSE -1 END);
    END IF;
    RETURN NULL;
END $$;

CREATE FUNCTION conveyor_reset_job_counters() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM job_counter_deltas;
    DELETE FROM job_counters;
    RETURN NULL;
END $$;
"""

_TRIGGERS = """
CREATE TRIGGER jobs_count_insert AFTER INSERT ON jobs
    REFERENCING NEW TABLE AS new_jobs
    FOR EACH STATEMENT EXECUTE FUNCTION conveyor_count_inserted_jobs();
CREATE TRIGGER jobs_count_delete AFTER DELETE ON jobs
    REFERENCING OLD TABLE AS old_jobs
    FOR EACH STATEMENT EXECUTE FUNCTION conveyor_count_deleted_jobs();
CREATE TRIGGER jobs_count_update AFTER UPDATE OF status, dispatched_at ON jobs
    FOR EACH ROW
    WHEN (OLD.status IS DISTINCT FROM NEW.status
          OR (OLD.dispatched_at IS NULL) <> (NEW.dispatched_at IS NULL))
    EXECUTE FUNCTION conveyor_count_updated_job();
CREATE TRIGGER jobs_count_truncate AFTER TRUNCATE ON jobs
    FOR EACH STATEMENT EXECUTE FUNCTION conveyor_reset_job_counters();
"""


def upgrade() -> None:
    op.create_table(
        "job_counters",
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("value", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_job_counters")),
    )
    op.create_table(
        "job_counter_deltas",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("delta", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_job_counter_deltas")),
    )
    # No job may change between the first count and the triggers taking over.
    op.execute("LOCK TABLE jobs IN SHARE ROW EXCLUSIVE MODE")
    op.execute(_FUNCTIONS)
    op.execute(_TRIGGERS)
    op.execute(
        f"""
        INSERT INTO job_counters (name, value)
        SELECT status, count(*) FROM jobs GROUP BY status
        UNION ALL SELECT 'undispatched', count(*) FROM jobs WHERE {_WAITING}
        """
    )


def downgrade() -> None:
    for trigger in ("insert", "delete", "update", "truncate"):
        op.execute(f"DROP TRIGGER jobs_count_{trigger} ON jobs")
    for function in ("inserted_jobs", "deleted_jobs", "updated_job"):
        op.execute(f"DROP FUNCTION conveyor_count_{function}()")
    op.execute("DROP FUNCTION conveyor_reset_job_counters()")
    op.drop_table("job_counter_deltas")
    op.drop_table("job_counters")
