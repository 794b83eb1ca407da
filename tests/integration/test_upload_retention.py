"""Upload retention and quota against real PostgreSQL and a real storage directory: a stored
upload goes once no job needs it (past the retention), never while a job does, and the
quota counts what a principal's jobs still hold."""

from __future__ import annotations

import os
import time
import uuid

import pytest
import sqlalchemy as sa

from core import api_keys, db
from core.api_keys import Role
from core.imports import uploads
from core.lifecycle import commands
from core.storage import UPLOADS, StoredUpload, save_upload, upload_path

DAY = 24 * 3600.0


def _principal(sessions) -> uuid.UUID:
    with db.transaction(sessions) as session:
        row, _ = api_keys.create_key(session, name="p", role=Role.submitter, pepper="x")
        return row.id


def _job(sessions, principal: uuid.UUID, upload: StoredUpload, status: str, ended_ago: float):
    params = {
        "importer": "products",
        "upload": {"path": upload.path, "sha256": upload.sha256, "size": upload.size},
    }
    with db.transaction(sessions) as session:
        job = commands.submit_job(
            session,
            kind="import",
            params=params,
            principal_id=principal,
            max_attempts=1,
            time_limit_seconds=60,
        ).job
        # Through running, as the state machine (a trigger) wants it.
        for step in ["running", status] if status != "queued" else []:
            session.execute(
                sa.text(
                    "UPDATE jobs SET status = :status, finished_at = CASE WHEN :status IN "
                    "('queued', 'running') THEN NULL ELSE now() - make_interval(secs => :ago) "
                    "END WHERE id = :id AND status <> :status"
                ),
                {"status": step, "ago": ended_ago, "id": job.id},
            )


def _store(tmp_path, text: str, *, age: float = DAY) -> StoredUpload:
    stored = save_upload(iter([text.encode()]), storage_dir=tmp_path, max_bytes=10_000)
    path = upload_path(tmp_path, stored.path)
    os.utime(path, (time.time() - age, time.time() - age))
    return stored


def test_purge_keeps_what_jobs_need_and_deletes_the_rest(sessions, tmp_path):
    principal = _principal(sessions)
    running = _store(tmp_path, "a,b\n1,running\n")
    recent = _store(tmp_path, "a,b\n2,failed an hour ago\n")
    old = _store(tmp_path, "a,b\n3,succeeded 3 days ago\n")
    shared = _store(tmp_path, "a,b\n4,old job and a queued one\n")
    orphan = _store(tmp_path, "a,b\n5,no job at all\n")
    fresh_orphan = _store(tmp_path, "a,b\n6,stored a moment ago\n", age=1)
    _job(sessions, principal, running, "running", 0)
    _job(sessions, principal, recent, "failed", 3600)
    _job(sessions, principal, old, "succeeded", 3 * DAY)
    _job(sessions, principal, shared, "succeeded", 3 * DAY)
    _job(sessions, principal, shared, "queued", 0)
    partial = tmp_path / UPLOADS / "incoming" / "dead.part"
    partial.write_bytes(b"half")
    os.utime(partial, (time.time() - DAY, time.time() - DAY))

    result = uploads.purge(sessions, tmp_path, retention_seconds=DAY, grace_seconds=600)

    def exists(upload: StoredUpload) -> bool:
        return upload_path(tmp_path, upload.path).exists()

    assert [exists(u) for u in (running, recent, old, shared, orphan, fresh_orphan)] == [
        True,
        True,
        False,
        True,
        False,
        True,
    ]
    assert (result.deleted, result.kept) == (2, 4)
    assert not partial.exists()


def test_the_quota_counts_distinct_uploads_still_held(sessions, tmp_path):
    principal = _principal(sessions)
    other = _principal(sessions)
    a = _store(tmp_path, "x" * 100)
    b = _store(tmp_path, "y" * 50)
    c = _store(tmp_path, "z" * 30)
    _job(sessions, principal, a, "queued", 0)
    _job(sessions, principal, a, "succeeded", 60)  # the same file twice counts once
    _job(sessions, principal, b, "failed", 60)
    _job(sessions, principal, c, "succeeded", 3 * DAY)  # past retention: not held
    _job(sessions, other, c, "queued", 0)
    with db.transaction(sessions) as session:
        held = uploads.stored_bytes(session, principal_id=principal, retention_seconds=DAY)
        theirs = uploads.stored_bytes(session, principal_id=other, retention_seconds=DAY)
    assert (held, theirs) == (150, 30)
    with db.transaction(sessions) as session:
        assert (
            uploads.stored_bytes(
                session, principal_id=principal, retention_seconds=DAY, excluding=a.sha256
            )
            == 50
        )
    uploads.check_quota(used=held, adding=50, quota=200)
    with pytest.raises(uploads.QuotaExceeded, match="quota of 200 bytes"):
        uploads.check_quota(used=held, adding=51, quota=200)
