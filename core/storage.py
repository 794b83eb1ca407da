"""Upload storage under ``settings.storage_dir``: streamed in, size-capped, sha256 recorded.

Files are content-addressed (``uploads/sha256/ab/<sha256>``): the same bytes always land on
the same path, so an Idempotency-Key replay of the same upload is the same request, and a
finished file is never rewritten (it is written aside, fsynced, then renamed into place).
"""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from core.errors import NotFound, PayloadTooLarge

UPLOADS = "uploads"


@dataclass(frozen=True)
class StoredUpload:
    path: str  # relative to the storage directory
    sha256: str
    size: int
    # Whether this upload put the file there (no earlier upload had the same bytes), and
    # its inode: ``discard`` removes only a file that is still this upload's own.
    created: bool = False
    inode: int = 0


class UploadWriter:
    """Receives one upload chunk by chunk; ``finish`` stores it, ``abort`` forgets it."""

    def __init__(self, storage_dir: Path, *, max_bytes: int) -> None:
        self._root = storage_dir
        self._max_bytes = max_bytes
        incoming = storage_dir / UPLOADS / "incoming"
        incoming.mkdir(parents=True, exist_ok=True)
        self._partial = incoming / f"{uuid.uuid4().hex}.part"
        self._file: BinaryIO | None = self._partial.open("wb")
        self._hash = hashlib.sha256()
        self.size = 0

    def write(self, chunk: bytes) -> None:
        assert self._file is not None, "upload already finished"
        self.size += len(chunk)
        if self.size > self._max_bytes:
            self.abort()
            raise PayloadTooLarge(
                f"The upload is larger than the {self._max_bytes:,}-byte limit.",
                where={"field": "file"},
            )
        self._hash.update(chunk)
        self._file.write(chunk)

    def finish(self) -> StoredUpload:
        assert self._file is not None, "upload already finished"
        self._file.flush()
        os.fsync(self._file.fileno())  # the job row will point at it: it must survive a crash
        self._file.close()
        self._file = None
        digest = self._hash.hexdigest()
        relative = f"{UPLOADS}/sha256/{digest[:2]}/{digest}"
        final = self._root / relative
        final.parent.mkdir(parents=True, exist_ok=True)
        created = not final.exists()
        inode = os.stat(self._partial).st_ino
        os.replace(self._partial, final)  # same bytes, same name: replacing is harmless
        return StoredUpload(relative, digest, self.size, created=created, inode=inode)

    def abort(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        self._partial.unlink(missing_ok=True)


def save_upload(chunks: Iterable[bytes], *, storage_dir: Path, max_bytes: int) -> StoredUpload:
    """Store a stream of bytes; PayloadTooLarge (and nothing stored) past ``max_bytes``."""
    writer = UploadWriter(storage_dir, max_bytes=max_bytes)
    try:
        for chunk in chunks:
            writer.write(chunk)
    except BaseException:
        writer.abort()
        raise
    return writer.finish()


def upload_path(storage_dir: Path, relative: str) -> Path:
    """The absolute path of a stored upload; refuses anything outside the uploads area."""
    root = (storage_dir / UPLOADS).resolve()
    path = (storage_dir / relative).resolve()
    if not path.is_relative_to(root):
        raise NotFound(f"No stored upload at {relative!r}.")
    return path


def open_upload(storage_dir: Path, relative: str) -> BinaryIO:
    try:
        return upload_path(storage_dir, relative).open("rb")
    except FileNotFoundError as error:
        raise NotFound(f"The uploaded file {relative!r} is no longer stored.") from error


def discard(storage_dir: Path, upload: StoredUpload) -> None:
    """Remove a stored upload whose request was refused, if this upload created the file
    and no later upload of the same bytes has replaced it since (then a job may need it)."""
    if not upload.created:
        return
    path = upload_path(storage_dir, upload.path)
    try:
        if os.stat(path).st_ino == upload.inode:
            path.unlink()
    except FileNotFoundError:
        pass
