"""What each queue holds (GET /v1/queues): jobs waiting and running from PostgreSQL (the
truth), messages in Redis, the oldest waiting job's age, the paused flag, and the workers
consuming it (asked over Celery's broadcast, with a short timeout)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import redis
import sqlalchemy as sa
import structlog
from sqlalchemy.orm import Session

from core.broker.breaker import RedisBreaker
from core.broker.queue_depth import queue_depths
from core.broker.task_names import JOB_ROUTES, QUEUES
from core.lifecycle.states import JobStatus
from core.models import Job, Queue

log = structlog.get_logger(__name__)

INSPECT_TIMEOUT = 0.5


@dataclass
class QueueInfo:
    name: str
    depth: int  # queued jobs (published or not, held or not)
    running: int
    oldest_waiting_seconds: float | None
    broker_depth: int | None  # messages in Redis; None while Redis is unreachable
    paused: bool
    paused_at: datetime | None
    workers: list[str] | None  # None: the workers could not be asked


def _job_stats(session: Session) -> dict[str, dict[str, Any]]:
    """Per kind: queued count, oldest queued age, running count (partial indexes on
    status = 'queued' and status = 'running' keep this to the live jobs)."""
    stats: dict[str, dict[str, Any]] = {}
    queued = session.execute(
        sa.select(
            Job.kind,
            sa.func.count(),
            sa.func.extract("epoch", sa.func.now() - sa.func.min(Job.created_at)),
        )
        .where(Job.status == JobStatus.queued.value)
        .group_by(Job.kind)
    )
    for kind, count, age in queued:
        stats.setdefault(kind, {})["queued"] = (int(count), float(age))
    running = session.execute(
        sa.select(Job.kind, sa.func.count())
        .where(Job.status == JobStatus.running.value)
        .group_by(Job.kind)
    )
    for kind, count in running:
        stats.setdefault(kind, {})["running"] = int(count)
    return stats


def consumers(celery: Any, timeout: float = INSPECT_TIMEOUT) -> dict[str, list[str]] | None:
    """Queue name -> worker names, from ``inspect().active_queues()``; None on failure."""
    try:
        replies = celery.control.inspect(timeout=timeout).active_queues() or {}
    except Exception as error:  # broker down: the overview still answers
        log.info("queues.inspect_failed", error=str(error)[:200])
        return None
    found: dict[str, list[str]] = {}
    for worker, queues in replies.items():
        for queue in queues or []:
            found.setdefault(str(queue.get("name")), []).append(str(worker))
    return {name: sorted(workers) for name, workers in found.items()}


def overview(
    session: Session,
    redis_client: redis.Redis,
    breaker: RedisBreaker,
    workers: dict[str, list[str]] | None,
) -> list[QueueInfo]:
    stats = _job_stats(session)
    rows = {row.name: row for row in session.scalars(sa.select(Queue))}
    depths = queue_depths(redis_client, breaker, QUEUES)
    infos = []
    for name in QUEUES:
        kinds = [k for k in stats if k in JOB_ROUTES and JOB_ROUTES[k].queue == name]
        queued = [stats[kind]["queued"] for kind in kinds if "queued" in stats[kind]]
        row = rows.get(name)
        infos.append(
            QueueInfo(
                name=name,
                depth=sum(count for count, _ in queued),
                running=sum(stats[kind].get("running", 0) for kind in kinds),
                oldest_waiting_seconds=max((age for _, age in queued), default=None),
                broker_depth=depths.get(name),
                paused=bool(row and row.paused),
                paused_at=row.paused_at if row else None,
                workers=None if workers is None else workers.get(name, []),
            )
        )
    return infos
