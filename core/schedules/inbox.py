"""The import inbox (``CONVEYOR_IMPORT_INBOX``): a server-side drop folder that import
schedules read. Writers should write elsewhere (or under a name starting with ".") and
rename the finished file in: a rename is atomic, so a firing never sees half a file.

A firing takes the files it imports out of the inbox *before* its transaction, by renaming
them into ``.claimed/<schedule id>/<fire time>/`` (atomic; a file can only be claimed once),
copies them into upload storage, and commits the firing and its jobs. After the commit the
claimed folder is renamed to ``processed/<schedule id>/<fire time>/``. A crash before the
commit leaves the claimed folder, which the retried firing (same fire time: nothing was
committed) takes up again; a crash after it leaves a folder whose firing exists, which the
schedule's next firing moves to ``processed``. So every file is imported exactly once, and
is never left in the inbox to be imported again.
"""

from __future__ import annotations

import fnmatch
import os
import shutil
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from core.errors import BadRequest
from core.imports.options import StoredFile
from core.storage import save_upload

CLAIMED = ".claimed"
PROCESSED = "processed"
MAX_FILES_PER_FIRING = 100
_CHUNK = 1 << 20
_STAMP = "%Y%m%dT%H%M%S.%fZ"


def check_pattern(pattern: str) -> str:
    """A file-name glob inside the inbox: never a path (no '/', '\\', '..', no leading '.'
    or '~'), so it cannot reach outside the inbox or into its bookkeeping folders."""
    bad = (
        not pattern
        or "/" in pattern
        or "\\" in pattern
        or ".." in pattern
        or "\x00" in pattern
        or pattern[0] in ".~"
        or os.path.isabs(pattern)
    )
    if bad:
        raise BadRequest(
            "inbox_pattern must be a file name pattern inside the inbox, such as "
            "'products-*.csv' (no '/', '..', absolute paths or leading '.').",
            where={"field": "job.inbox_pattern"},
        )
    return pattern


def stamp(fire_time: datetime) -> str:
    return fire_time.astimezone(UTC).strftime(_STAMP)


def _from_stamp(text: str) -> datetime | None:
    try:
        return datetime.strptime(text, _STAMP).replace(tzinfo=UTC)
    except ValueError:
        return None


def _claimed_root(inbox: Path, schedule_id: uuid.UUID) -> Path:
    return inbox / CLAIMED / str(schedule_id)


def _matching(inbox: Path, pattern: str) -> list[str]:
    """Regular files (not symlinks, which could point anywhere) directly in the inbox whose
    name matches, oldest first."""
    found: list[tuple[float, str]] = []
    with os.scandir(inbox) as entries:
        for entry in entries:
            if entry.name.startswith(".") or not fnmatch.fnmatchcase(entry.name, pattern):
                continue
            if entry.is_file(follow_symlinks=False):
                found.append((entry.stat(follow_symlinks=False).st_mtime, entry.name))
    return [name for _, name in sorted(found)[:MAX_FILES_PER_FIRING]]


def leftover_claims(inbox: Path, schedule_id: uuid.UUID) -> Iterator[tuple[datetime, Path]]:
    """Claimed folders of earlier fire times (a crash between claim and move)."""
    root = _claimed_root(inbox, schedule_id)
    if not root.is_dir():
        return
    for folder in sorted(root.iterdir()):
        fire_time = _from_stamp(folder.name)
        if fire_time is not None and folder.is_dir():
            yield fire_time, folder


def claim(
    inbox: Path, schedule_id: uuid.UUID, fire_time: datetime, pattern: str, adopt: list[Path]
) -> list[Path]:
    """Move the matching files (and those of ``adopt``: claimed folders whose firing never
    committed) into this fire time's claimed folder; returns its files, oldest first."""
    folder = _claimed_root(inbox, schedule_id) / stamp(fire_time)
    folder.mkdir(parents=True, exist_ok=True)
    for old in adopt:
        if old != folder:
            for path in old.iterdir():
                os.replace(path, folder / path.name)
            old.rmdir()
    for name in _matching(inbox, pattern):
        try:
            os.rename(inbox / name, folder / name)
        except FileNotFoundError:  # removed meanwhile
            continue
    files = sorted(folder.iterdir(), key=lambda p: (p.stat().st_mtime, p.name))
    if not files:
        folder.rmdir()
    return files


def store(path: Path, storage_dir: Path, max_bytes: int) -> StoredFile:
    """Copy a claimed file into upload storage (content-addressed, as uploads are)."""

    def chunks() -> Iterator[bytes]:
        with path.open("rb") as source:
            while chunk := source.read(_CHUNK):
                yield chunk

    stored = save_upload(chunks(), storage_dir=storage_dir, max_bytes=max_bytes)
    return StoredFile(path=stored.path, sha256=stored.sha256, size=stored.size, filename=path.name)


def mark_processed(inbox: Path, schedule_id: uuid.UUID, fire_time: datetime) -> None:
    """After the firing committed: its claimed folder goes to ``processed``."""
    folder = _claimed_root(inbox, schedule_id) / stamp(fire_time)
    if not folder.is_dir():
        return
    target = inbox / PROCESSED / str(schedule_id) / stamp(fire_time)
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():  # an earlier move was cut short: keep both
        for path in folder.iterdir():
            os.replace(path, target / path.name)
        shutil.rmtree(folder, ignore_errors=True)
        return
    os.rename(folder, target)
