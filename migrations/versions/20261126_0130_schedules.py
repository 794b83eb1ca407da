"""schedules, their firings, queue pause state; jobs know their firing; retention index

``schedules`` hold periodic jobs; ``schedule_firings`` is unique on (schedule_id, fire_time):
the row that makes a fire time fire exactly once, inserted in the same transaction as its
job (core/schedules/tick.py). ``queues`` records paused queues (core/queues/control.py).
``jobs.schedule_id`` / ``jobs.fire_time`` name the firing that made a job.
``ix_jobs_finished`` lets retention take the oldest finished jobs without a scan, and
``ix_schedule_firings_job`` keeps the foreign key's SET NULL cheap when it deletes them.

Revision ID: 0130_schedules
Revises: 0120_job_metrics
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0130_schedules"
down_revision = "0120_job_metrics"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "queues",
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("paused", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("paused_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("paused_by", sa.Uuid(), nullable=True),
        sa.ForeignKeyConstraint(
            ["paused_by"],
            ["api_keys.id"],
            name=op.f("fk_queues_paused_by_api_keys"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_queues")),
    )
    op.create_table(
        "schedules",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("cron", sa.Text(), nullable=True),
        sa.Column("interval_seconds", sa.Double(), nullable=True),
        sa.Column("timezone", sa.Text(), nullable=False),
        sa.Column("job", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("owner_id", sa.Uuid(), nullable=False),
        sa.Column("catch_up", sa.Text(), nullable=False),
        sa.Column("overlap", sa.Text(), nullable=False),
        sa.Column("paused", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("anchor_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("next_fire_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_fired_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "catch_up IN ('skip', 'latest', 'all')", name=op.f("ck_schedules_catch_up")
        ),
        sa.CheckConstraint("overlap IN ('skip', 'allow')", name=op.f("ck_schedules_overlap")),
        sa.CheckConstraint(
            "(cron IS NULL) <> (interval_seconds IS NULL)", name=op.f("ck_schedules_one_timing")
        ),
        sa.ForeignKeyConstraint(
            ["owner_id"],
            ["api_keys.id"],
            name=op.f("fk_schedules_owner_id_api_keys"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_schedules")),
        sa.UniqueConstraint("name", name=op.f("uq_schedules_name")),
    )
    op.create_index(
        "ix_schedules_due",
        "schedules",
        ["next_fire_at"],
        unique=False,
        postgresql_where=sa.text("NOT paused"),
    )
    op.create_table(
        "schedule_firings",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("schedule_id", sa.Uuid(), nullable=False),
        sa.Column("fire_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("job_id", sa.Uuid(), nullable=True),
        sa.Column("detail", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "status IN ('created', 'skipped_overlap', 'skipped_no_input', 'skipped_catch_up', "
            "'failed')",
            name=op.f("ck_schedule_firings_status"),
        ),
        sa.ForeignKeyConstraint(
            ["job_id"],
            ["jobs.id"],
            name=op.f("fk_schedule_firings_job_id_jobs"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["schedule_id"],
            ["schedules.id"],
            name=op.f("fk_schedule_firings_schedule_id_schedules"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_schedule_firings")),
        sa.UniqueConstraint(
            "schedule_id", "fire_time", name=op.f("uq_schedule_firings_schedule_id_fire_time")
        ),
    )
    op.create_index("ix_schedule_firings_job", "schedule_firings", ["job_id"], unique=False)
    op.add_column("jobs", sa.Column("schedule_id", sa.Uuid(), nullable=True))
    op.add_column("jobs", sa.Column("fire_time", sa.DateTime(timezone=True), nullable=True))
    op.create_index(
        "ix_jobs_finished",
        "jobs",
        ["finished_at"],
        unique=False,
        postgresql_where=sa.text("status IN ('succeeded', 'failed', 'cancelled')"),
    )
    op.create_index(
        "ix_jobs_schedule",
        "jobs",
        ["schedule_id", "fire_time"],
        unique=False,
        postgresql_where=sa.text("schedule_id IS NOT NULL"),
    )
    op.create_foreign_key(
        op.f("fk_jobs_schedule_id_schedules"),
        "jobs",
        "schedules",
        ["schedule_id"],
        ["id"],
        ondelete="SET NULL",
    )


def downgrade() -> None:
    op.drop_constraint(op.f("fk_jobs_schedule_id_schedules"), "jobs", type_="foreignkey")
    op.drop_index(
        "ix_jobs_schedule", table_name="jobs", postgresql_where=sa.text("schedule_id IS NOT NULL")
    )
    op.drop_index(
        "ix_jobs_finished",
        table_name="jobs",
        postgresql_where=sa.text("status IN ('succeeded', 'failed', 'cancelled')"),
    )
    op.drop_column("jobs", "fire_time")
    op.drop_column("jobs", "schedule_id")
    op.drop_index("ix_schedule_firings_job", table_name="schedule_firings")
    op.drop_table("schedule_firings")
    op.drop_index(
        "ix_schedules_due", table_name="schedules", postgresql_where=sa.text("NOT paused")
    )
    op.drop_table("schedules")
    op.drop_table("queues")
