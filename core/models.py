"""ORM tables only. Request/response shapes live in ``api/schemas``."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import Mapped, mapped_column

from core.db import Base
from core.lifecycle.states import JobStatus

_STATUSES = ", ".join(f"'{s.value}'" for s in JobStatus)


class ApiKey(Base):
    __tablename__ = "api_keys"
    __table_args__ = (
        sa.CheckConstraint("role IN ('submitter', 'operator', 'admin')", name="role"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    name: Mapped[str] = mapped_column(sa.Text)
    role: Mapped[str] = mapped_column(sa.Text)
    key_hash: Mapped[str] = mapped_column(sa.Text, unique=True)
    # Grants beyond the role, e.g. "imports:products" (importer declarations name them).
    scopes: Mapped[list[str]] = mapped_column(
        ARRAY(sa.Text), default=list, server_default=sa.text("'{}'::text[]")
    )
    created_at: Mapped[datetime] = mapped_column(
        sa.DateTime(timezone=True), server_default=sa.func.now()
    )
    revoked_at: Mapped[datetime | None] = mapped_column(sa.DateTime(timezone=True))


class Job(Base):
    """One row per job: the source of truth for state, progress, checkpoint and outbox."""

    __tablename__ = "jobs"
    __table_args__ = (
        sa.CheckConstraint(f"status IN ({_STATUSES})", name="status"),
        sa.UniqueConstraint("principal_id", "idempotency_key"),
        sa.Index("ix_jobs_created", "created_at", "id"),
        sa.Index(
            "ix_jobs_undispatched",
            "created_at",
            postgresql_where=sa.text("status = 'queued' AND dispatched_at IS NULL"),
        ),
        sa.Index(
            "ix_jobs_queued_kind",
            "kind",
            "created_at",
            postgresql_where=sa.text("status = 'queued'"),
        ),
        sa.Index(
            "ix_jobs_running_lease",
            "lease_expires_at",
            postgresql_where=sa.text("status = 'running'"),
        ),
        # Retention takes the oldest finished jobs first without scanning the rest.
        sa.Index(
            "ix_jobs_finished",
            "finished_at",
            postgresql_where=sa.text("status IN ('succeeded', 'failed', 'cancelled')"),
        ),
        sa.Index(
            "ix_jobs_schedule",
            "schedule_id",
            "fire_time",
            postgresql_where=sa.text("schedule_id IS NOT NULL"),
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    kind: Mapped[str] = mapped_column(sa.Text)
    status: Mapped[str] = mapped_column(
        sa.Text, default=JobStatus.queued.value, server_default=JobStatus.queued.value
    )
    params: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)
    principal_id: Mapped[uuid.UUID | None] = mapped_column(
        sa.ForeignKey("api_keys.id", ondelete="SET NULL")
    )
    idempotency_key: Mapped[str | None] = mapped_column(sa.Text)
    request_fingerprint: Mapped[str] = mapped_column(sa.Text)
    request_id: Mapped[str | None] = mapped_column(sa.Text)
    # The job's trace (core.tracing): its id for logs and clients, and the W3C context of the
    # submit that every publish of the job continues (NULL when tracing was off).
    trace_id: Mapped[str | None] = mapped_column(sa.Text)
    traceparent: Mapped[str | None] = mapped_column(sa.Text)

    attempt: Mapped[int] = mapped_column(default=0, server_default="0")
    max_attempts: Mapped[int] = mapped_column(default=5, server_default="5")
    lease_owner: Mapped[str | None] = mapped_column(sa.Text)
    lease_expires_at: Mapped[datetime | None] = mapped_column(sa.DateTime(timezone=True))
    cancel_requested: Mapped[bool] = mapped_column(default=False, server_default=sa.false())
    # Run-time limit of one attempt, fixed at submit; the claim turns it into the attempt's
    # hard deadline (limit + grace), past which the lease is never renewed.
    time_limit_seconds: Mapped[float] = mapped_column(sa.Double, server_default="3600")
    run_deadline_at: Mapped[datetime | None] = mapped_column(sa.DateTime(timezone=True))
    # Units committed by the current run; each unit's commit is fenced on it, so a unit
    # retried after an uncertain COMMIT can tell whether it already applied.
    unit_seq: Mapped[int] = mapped_column(sa.BigInteger, default=0, server_default="0")
    # Why a queued job is not running yet, when it is held back on purpose (limits, a
    # paused queue); NULL otherwise.
    waiting_reason: Mapped[str | None] = mapped_column(sa.Text)

    progress_total: Mapped[int | None] = mapped_column(sa.BigInteger)
    progress_done: Mapped[int] = mapped_column(sa.BigInteger, default=0, server_default="0")
    progress_failed: Mapped[int] = mapped_column(sa.BigInteger, default=0, server_default="0")
    checkpoint: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    error_code: Mapped[str | None] = mapped_column(sa.Text)
    error_message: Mapped[str | None] = mapped_column(sa.Text)

    created_at: Mapped[datetime] = mapped_column(
        sa.DateTime(timezone=True), server_default=sa.func.now()
    )
    updated_at: Mapped[datetime] = mapped_column(
        sa.DateTime(timezone=True), server_default=sa.func.now()
    )
    dispatched_at: Mapped[datetime | None] = mapped_column(sa.DateTime(timezone=True))
    started_at: Mapped[datetime | None] = mapped_column(sa.DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(sa.DateTime(timezone=True))
    # The schedule firing that made the job (core/schedules), if any.
    schedule_id: Mapped[uuid.UUID | None] = mapped_column(
        sa.ForeignKey("schedules.id", ondelete="SET NULL")
    )
    fire_time: Mapped[datetime | None] = mapped_column(sa.DateTime(timezone=True))


class JobEvent(Base):
    """Append-only log per job: status changes, progress notes, task events."""

    __tablename__ = "job_events"
    __table_args__ = (sa.Index("ix_job_events_job", "job_id", "id"),)

    id: Mapped[int] = mapped_column(sa.BigInteger, sa.Identity(), primary_key=True)
    job_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("jobs.id", ondelete="CASCADE"))
    at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True), server_default=sa.func.now())
    type: Mapped[str] = mapped_column(sa.Text)
    attempt: Mapped[int] = mapped_column(default=0)
    data: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)


class ImportRowError(Base):
    """One problem with one row of an import; a row with several bad cells has several.

    ``raw`` (the row's original fields) is stored on the row's first error only, which is
    enough to rebuild the rejected rows as CSV without repeating them per error.
    """

    __tablename__ = "import_errors"
    __table_args__ = (sa.Index("ix_import_errors_job_row", "job_id", "row", "id"),)

    id: Mapped[int] = mapped_column(sa.BigInteger, sa.Identity(), primary_key=True)
    job_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("jobs.id", ondelete="CASCADE"))
    row: Mapped[int] = mapped_column(sa.BigInteger)
    column: Mapped[str | None] = mapped_column(sa.Text)
    code: Mapped[str] = mapped_column(sa.Text)
    message: Mapped[str] = mapped_column(sa.Text)
    value: Mapped[str | None] = mapped_column(sa.Text)
    raw: Mapped[list[str] | None] = mapped_column(JSONB)


class Product(Base):
    """Target of the built-in ``products`` importer (core/imports/declarations/products.yaml).
    Created by migration 0002, before importers created their own tables; the declaration
    and this table must stay compatible (the importer checks it before every load)."""

    __tablename__ = "products"
    __table_args__ = (
        sa.CheckConstraint("price >= 0", name="price_not_negative"),
        sa.CheckConstraint("quantity >= 0", name="quantity_not_negative"),
    )

    sku: Mapped[str] = mapped_column(sa.Text, primary_key=True)
    name: Mapped[str] = mapped_column(sa.Text)
    description: Mapped[str | None] = mapped_column(sa.Text)
    price: Mapped[Decimal | None] = mapped_column(sa.Numeric(12, 2))
    quantity: Mapped[int | None] = mapped_column(sa.Integer)
    category: Mapped[str | None] = mapped_column(sa.Text)
    updated_at: Mapped[datetime | None] = mapped_column(sa.DateTime(timezone=True))
    # Set whenever an import writes the row (not when an identical row is re-imported).
    imported_at: Mapped[datetime] = mapped_column(
        sa.DateTime(timezone=True), server_default=sa.func.now()
    )


class JobLog(Base):
    """A job's output, line by line or event by event (a deployment's Ansible events), in
    order; ``id`` is the cursor clients resume from (``?after=``, SSE ``Last-Event-ID``)."""

    __tablename__ = "job_logs"
    __table_args__ = (sa.Index("ix_job_logs_job", "job_id", "id"),)

    id: Mapped[int] = mapped_column(sa.BigInteger, sa.Identity(), primary_key=True)
    job_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("jobs.id", ondelete="CASCADE"))
    attempt: Mapped[int] = mapped_column()
    at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True), server_default=sa.func.now())
    event: Mapped[str] = mapped_column(sa.Text)
    host: Mapped[str | None] = mapped_column(sa.Text)
    task: Mapped[str | None] = mapped_column(sa.Text)
    line: Mapped[str] = mapped_column(sa.Text, default="")
    data: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)


class Secret(Base):
    """A named secret, Fernet-encrypted (core/secrets/vault.py); the plain value is never
    stored. Each PUT replaces the value and bumps ``version``."""

    __tablename__ = "secrets"

    name: Mapped[str] = mapped_column(sa.Text, primary_key=True)
    version: Mapped[int] = mapped_column(default=1)
    ciphertext: Mapped[str] = mapped_column(sa.Text)
    created_at: Mapped[datetime] = mapped_column(
        sa.DateTime(timezone=True), server_default=sa.func.now()
    )
    updated_at: Mapped[datetime] = mapped_column(
        sa.DateTime(timezone=True), server_default=sa.func.now()
    )


class DeploymentTarget(Base):
    """The targets (``host:port``) of a deployment job, written at submit; the per-target
    lock is "no other running deployment holds one of my targets" (core/deployments/limits)."""

    __tablename__ = "deployment_targets"
    __table_args__ = (sa.Index("ix_deployment_targets_target", "target"),)

    job_id: Mapped[uuid.UUID] = mapped_column(
        sa.ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True
    )
    target: Mapped[str] = mapped_column(sa.Text, primary_key=True)


class JobCounter(Base):
    """Jobs by status (and ``undispatched``), maintained by triggers on ``jobs`` so a metrics
    scrape never counts the table (core.lifecycle.counters). The value is this row plus the
    not-yet-folded rows of ``job_counter_deltas``."""

    __tablename__ = "job_counters"

    name: Mapped[str] = mapped_column(sa.Text, primary_key=True)
    value: Mapped[int] = mapped_column(sa.BigInteger)


class JobCounterDelta(Base):
    """Changes to ``job_counters`` appended by the triggers: inserts never wait on each
    other, unlike updates of one counter row would."""

    __tablename__ = "job_counter_deltas"

    id: Mapped[int] = mapped_column(sa.BigInteger, sa.Identity(), primary_key=True)
    name: Mapped[str] = mapped_column(sa.Text)
    delta: Mapped[int] = mapped_column(sa.BigInteger)


class Schedule(Base):
    """A periodic job: a cron expression (in ``timezone``) or an interval, and the job to
    submit at each firing, as ``owner`` (core/schedules)."""

    __tablename__ = "schedules"
    __table_args__ = (
        sa.CheckConstraint("(cron IS NULL) <> (interval_seconds IS NULL)", name="one_timing"),
        sa.CheckConstraint("catch_up IN ('skip', 'latest', 'all')", name="catch_up"),
        sa.CheckConstraint("overlap IN ('skip', 'allow')", name="overlap"),
        sa.Index("ix_schedules_due", "next_fire_at", postgresql_where=sa.text("NOT paused")),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    name: Mapped[str] = mapped_column(sa.Text, unique=True)
    cron: Mapped[str | None] = mapped_column(sa.Text)
    interval_seconds: Mapped[float | None] = mapped_column(sa.Double)
    timezone: Mapped[str] = mapped_column(sa.Text, default="UTC")
    # {"kind": ..., "params": {...}} or, for an inbox import, {"kind": "import", "importer",
    # "inbox_pattern", "options"}: validated at create/update (core/schedules/template.py).
    job: Mapped[dict[str, Any]] = mapped_column(JSONB)
    owner_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("api_keys.id", ondelete="CASCADE"))
    catch_up: Mapped[str] = mapped_column(sa.Text, default="skip")
    overlap: Mapped[str] = mapped_column(sa.Text, default="skip")
    paused: Mapped[bool] = mapped_column(default=False, server_default=sa.false())
    # Interval schedules fire at anchor + k * interval.
    anchor_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True))
    next_fire_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True))
    last_fired_at: Mapped[datetime | None] = mapped_column(sa.DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(
        sa.DateTime(timezone=True), server_default=sa.func.now()
    )
    updated_at: Mapped[datetime] = mapped_column(
        sa.DateTime(timezone=True), server_default=sa.func.now()
    )


class ScheduleFiring(Base):
    """One fire time of one schedule, decided once: the unique key is what makes any number
    of ticking processes fire it exactly once. ``job_id`` is the (first) job it created."""

    __tablename__ = "schedule_firings"
    __table_args__ = (
        sa.UniqueConstraint("schedule_id", "fire_time"),
        sa.CheckConstraint(
            "status IN ('created', 'skipped_overlap', 'skipped_no_input', 'skipped_catch_up', "
            "'failed')",
            name="status",
        ),
        # Retention deletes jobs; the foreign key's SET NULL looks firings up by job.
        sa.Index("ix_schedule_firings_job", "job_id"),
    )

    id: Mapped[int] = mapped_column(sa.BigInteger, sa.Identity(), primary_key=True)
    schedule_id: Mapped[uuid.UUID] = mapped_column(
        sa.ForeignKey("schedules.id", ondelete="CASCADE")
    )
    fire_time: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True))
    status: Mapped[str] = mapped_column(sa.Text)
    job_id: Mapped[uuid.UUID | None] = mapped_column(sa.ForeignKey("jobs.id", ondelete="SET NULL"))
    detail: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)
    created_at: Mapped[datetime] = mapped_column(
        sa.DateTime(timezone=True), server_default=sa.func.now()
    )


class Queue(Base):
    """Operator state of a Celery queue: a paused queue's jobs wait (core/queues.py)."""

    __tablename__ = "queues"

    name: Mapped[str] = mapped_column(sa.Text, primary_key=True)
    paused: Mapped[bool] = mapped_column(default=False, server_default=sa.false())
    paused_at: Mapped[datetime | None] = mapped_column(sa.DateTime(timezone=True))
    paused_by: Mapped[uuid.UUID | None] = mapped_column(
        sa.ForeignKey("api_keys.id", ondelete="SET NULL")
    )
