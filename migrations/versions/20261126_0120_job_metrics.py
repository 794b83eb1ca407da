"""job metrics: finished jobs by kind and outcome, run times, retries, reaped leases

The status-change trigger of 1000_job_counters also appends, on the same row change:
``finished:<kind>:<status>``, ``failed:<kind>:<code>``, a run-time histogram bucket
``runtime:<kind>:<le>`` with ``runtime_ms:<kind>``, ``retries:<kind>`` (a claim of attempt
2 or later) and ``reaped:<kind>`` (running -> queued: only the lease reaper does that).
Like the status counts they are folded into ``job_counters``, so /metrics reads them in
O(1) and they are right across every API and worker process. An index gives each kind's
oldest waiting job (a queue's age) as its first entry.

Revision ID: 0120_job_metrics
Revises: 0100_deployments
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0120_job_metrics"
down_revision = "0100_deployments"
branch_labels = None
depends_on = None

# Upper bounds (seconds) of the run-time histogram; core/metrics.py reads the same list.
BUCKETS = ("0.1", "0.5", "1", "5", "15", "60", "300", "900", "3600", "14400")

_UPDATED_V1 = """
CREATE OR REPLACE FUNCTION conveyor_count_updated_job() RETURNS trigger LANGUAGE plpgsql AS $$
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
"""

_UPDATED_V2 = f"""
CREATE OR REPLACE FUNCTION conveyor_count_updated_job() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    was_waiting boolean := OLD.status = 'queued' AND OLD.dispatched_at IS NULL;
    is_waiting boolean := NEW.status = 'queued' AND NEW.dispatched_at IS NULL;
    seconds double precision;
    bucket text;
BEGIN
    IF was_waiting <> is_waiting THEN
        INSERT INTO job_counter_deltas (name, delta)
        VALUES ('undispatched', CASE WHEN is_waiting THEN 1 ELSE -1 END);
    END IF;
    IF OLD.status IS NOT DISTINCT FROM NEW.status THEN
        RETURN NULL;
    END IF;
    INSERT INTO job_counter_deltas (name, delta) VALUES (OLD.status, -1), (NEW.status, 1);
    IF NEW.status = 'running' AND NEW.attempt > 1 THEN
        INSERT INTO job_counter_deltas (name, delta) VALUES ('retries:' || NEW.kind, 1);
    ELSIF OLD.status = 'running' AND NEW.status = 'queued' THEN
        INSERT INTO job_counter_deltas (name, delta) VALUES ('reaped:' || NEW.kind, 1);
    ELSIF NEW.status IN ('succeeded', 'failed', 'cancelled') THEN
        INSERT INTO job_counter_deltas (name, delta)
        VALUES ('finished:' || NEW.kind || ':' || NEW.status, 1);
        IF NEW.status = 'failed' THEN
            INSERT INTO job_counter_deltas (name, delta)
            VALUES ('failed:' || NEW.kind || ':' || coalesce(NEW.error_code, 'unknown'), 1);
        END IF;
        IF NEW.started_at IS NOT NULL AND NEW.finished_at IS NOT NULL THEN
            seconds := extract(epoch FROM NEW.finished_at - NEW.started_at);
            bucket := coalesce(
                (SELECT b FROM unnest(ARRAY{list(BUCKETS)}::text[]) WITH ORDINALITY AS u(b, n)
                 WHERE seconds <= b::double precision ORDER BY n LIMIT 1),
                '+Inf');
            INSERT INTO job_counter_deltas (name, delta)
            VALUES ('runtime:' || NEW.kind || ':' || bucket, 1),
                   ('runtime_ms:' || NEW.kind, round(seconds * 1000)::bigint);
        END IF;
    END IF;
    RETURN NULL;
END $$;
"""


def upgrade() -> None:
    op.execute(_UPDATED_V2)
    # The oldest waiting job of each kind (a queue's age) is the first entry per kind.
    op.create_index(
        "ix_jobs_queued_kind",
        "jobs",
        ["kind", "created_at"],
        postgresql_where=sa.text("status = 'queued'"),
    )


def downgrade() -> None:
    op.drop_index("ix_jobs_queued_kind", table_name="jobs")
    op.execute(_UPDATED_V1)
    op.execute(
        "DELETE FROM job_counters WHERE name LIKE '%:%'; "
        "DELETE FROM job_counter_deltas WHERE name LIKE '%:%'"
    )
