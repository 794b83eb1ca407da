"""Stored uploads over time: which ones jobs still need, the per-principal quota, and the
purge that deletes the rest.

An import job needs its upload while it is queued or running, and for
``upload_retention_seconds`` after it ended (a failed or cancelled import may be retried).
Uploads are content-addressed, so one file may serve several jobs: it goes only when none
of them needs it. Files younger than the grace period are never purged, whatever the
database says: a request may have stored one a moment ago and not inserted its job yet.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
import structlog
from sqlalchemy.orm import Session

from core import db
from core.errors import PayloadTooLarge
from core.lifecycle.states import ACTIVE
from core.models import Job
from core.storage import UPLOADS

log = structlog.get_logger(__name__)

IMPORT_KIND = "import"
GRACE_SECONDS = 3600.0
BATCH = 1_000
_SHA256 = Job.params["upload"]["sha256"].astext
_SIZE = Job.params["upload"]["size"].astext


class QuotaExceeded(PayloadTooLarge):
    """Your stored uploads would exceed your storage quota."""

    code = "storage_quota_exceeded"


def _holding(retention_seconds: float) -> sa.ColumnElement[bool]:
    """Jobs that still need their upload."""
    cutoff = sa.func.now() - sa.func.make_interval(0, 0, 0, 0, 0, 0, retention_seconds)
    return sa.and_(
        Job.kind == IMPORT_KIND,
        sa.or_(
            Job.status.in_([status.value for status in ACTIVE]),
            Job.finished_at.is_(None),
            Job.finished_at > cutoff,
        ),
    )


def stored_bytes(
    session: Session,
    *,
    principal_id: uuid.UUID,
    retention_seconds: float,
    excluding: str | None = None,
) -> int:
    """Bytes of the distinct uploads this principal's jobs still hold (its quota's use),
    leaving out the upload with sha256 ``excluding`` (the one being added)."""
    query = sa.select(_SHA256.label("sha256"), sa.cast(_SIZE, sa.BigInteger).label("size")).where(
        _holding(retention_seconds), Job.principal_id == principal_id
    )
    if excluding is not None:
        query = query.where(excluding != _SHA256)
    held = query.distinct().subquery()
    return int(session.scalar(sa.select(sa.func.coalesce(sa.func.sum(held.c.size), 0))) or 0)


def quota_error(*, used: int, quota: int) -> QuotaExceeded:
    return QuotaExceeded(
        f"This upload would exceed your storage quota of {quota:,} bytes ({used:,} bytes "
        "are held by your queued, running and recent imports); try again once they are "
        "older than the retention period, or ask an admin to raise "
        "CONVEYOR_UPLOAD_QUOTA_BYTES.",
        where={"field": "file"},
    )


def check_quota(*, used: int, adding: int, quota: int) -> None:
    if used + adding > quota:
        raise quota_error(used=used, quota=quota)


def needed(session: Session, *, digests: list[str], retention_seconds: float) -> set[str]:
    query = sa.select(_SHA256).where(_holding(retention_seconds), _SHA256.in_(digests)).distinct()
    return {str(digest) for digest in session.scalars(query)}


@dataclass
class PurgeResult:
    deleted: int = 0
    deleted_bytes: int = 0
    kept: int = 0


def _stored_files(storage_dir: Path) -> Iterator[Path]:
    root = storage_dir / UPLOADS / "sha256"
    if not root.is_dir():
        return
    for prefix in sorted(root.iterdir()):
        if prefix.is_dir():
            yield from sorted(prefix.iterdir())


def _old(path: Path, before: float) -> os.stat_result | None:
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    return stat if stat.st_mtime < before else None


def purge(
    sessions: db.Sessions,
    storage_dir: Path,
    *,
    retention_seconds: float,
    grace_seconds: float = GRACE_SECONDS,
) -> PurgeResult:
    """Delete stored uploads no job needs any more, and partial uploads left by crashes."""
    before = time.time() - grace_seconds
    result = PurgeResult()
    files = list(_stored_files(storage_dir))
    for start in range(0, len(files), BATCH):
        chunk = files[start : start + BATCH]
        with db.transaction(sessions) as session:
            keep = needed(
                session, digests=[p.name for p in chunk], retention_seconds=retention_seconds
            )
        for path in chunk:
            stat = _old(path, before)  # checked again right before deleting
            if path.name in keep or stat is None:
                result.kept += 1
                continue
            path.unlink(missing_ok=True)
            result.deleted += 1
            result.deleted_bytes += stat.st_size
    incoming = storage_dir / UPLOADS / "incoming"
    for partial in sorted(incoming.glob("*.part")) if incoming.is_dir() else []:
        if _old(partial, before) is not None:
            partial.unlink(missing_ok=True)
    log.info("uploads.purged", **vars(result))
    return result
