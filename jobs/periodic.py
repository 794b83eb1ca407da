"""Beat-driven platform work: the outbox relay, the lease reaper, the upload purge."""

from __future__ import annotations

from typing import Any

import redis
import structlog

from core import db
from core.broker.publisher import JobPublisher
from core.broker.relay import REQUEST_PUBLISH_GRACE, relay_pass, relay_undispatched
from core.imports import uploads
from core.lifecycle import commands
from core.settings import Settings

log = structlog.get_logger(__name__)


def relay_outbox(
    sessions: db.Sessions, publisher: JobPublisher, redis_client: redis.Redis
) -> dict[str, Any]:
    return relay_pass(sessions, publisher, redis_client, min_age=REQUEST_PUBLISH_GRACE)


def reap_leases(sessions: db.Sessions, publisher: JobPublisher) -> dict[str, Any]:
    """Put back jobs whose worker died or hung, then publish them at once (not at the next
    relay tick), so recovery takes about one lease plus one reaper interval."""
    with db.transaction(sessions) as session:
        requeued, exhausted = commands.requeue_expired(session, limit=500)
    if requeued or exhausted:
        log.warning("reaper.requeued", requeued=[str(j.id) for j in requeued], failed=exhausted)
    relayed = relay_undispatched(sessions, publisher) if requeued else {"published": 0}
    return {"requeued": len(requeued), "failed": exhausted, **relayed}


def purge_uploads(sessions: db.Sessions, settings: Settings) -> dict[str, Any]:
    """Delete stored uploads that no job needs any more (see core/imports/uploads.py)."""
    result = uploads.purge(
        sessions, settings.storage_dir, retention_seconds=settings.upload_retention_seconds
    )
    return {"deleted": result.deleted, "deleted_bytes": result.deleted_bytes}
