"""Upload storage: content-addressed, size-capped, nothing left behind on refusal."""

from __future__ import annotations

import hashlib

import pytest

from core.errors import NotFound, PayloadTooLarge
from core.storage import discard, open_upload, save_upload, upload_path


def test_save_upload_streams_and_addresses_by_content(tmp_path):
    data = [b"sku,name\n", b"A,a\n"]
    stored = save_upload(iter(data), storage_dir=tmp_path, max_bytes=100)
    digest = hashlib.sha256(b"".join(data)).hexdigest()
    assert (stored.sha256, stored.size) == (digest, 13)
    assert stored.path == f"uploads/sha256/{digest[:2]}/{digest}"
    with open_upload(tmp_path, stored.path) as file:
        assert file.read() == b"sku,name\nA,a\n"
    again = save_upload(iter(data), storage_dir=tmp_path, max_bytes=100)
    assert (again.path, again.sha256, again.size) == (stored.path, stored.sha256, stored.size)
    assert stored.created
    assert not again.created


def test_discard_removes_only_a_file_this_upload_created_and_still_owns(tmp_path):
    first = save_upload(iter([b"a,b\n"]), storage_dir=tmp_path, max_bytes=100)
    second = save_upload(iter([b"a,b\n"]), storage_dir=tmp_path, max_bytes=100)
    path = upload_path(tmp_path, first.path)
    discard(tmp_path, second)  # not created by it: another job may use the file
    discard(tmp_path, first)  # replaced since by the second upload: not its own any more
    assert path.exists()
    third = save_upload(iter([b"c,d\n"]), storage_dir=tmp_path, max_bytes=100)
    discard(tmp_path, third)
    assert not upload_path(tmp_path, third.path).exists()


def test_over_the_cap_is_refused_and_removed(tmp_path):
    with pytest.raises(PayloadTooLarge):
        save_upload(iter([b"x" * 60, b"y" * 60]), storage_dir=tmp_path, max_bytes=100)
    assert list((tmp_path / "uploads" / "incoming").iterdir()) == []


def test_paths_outside_the_upload_area_are_refused(tmp_path):
    with pytest.raises(NotFound):
        upload_path(tmp_path, "uploads/../../etc/passwd")
    with pytest.raises(NotFound):
        open_upload(tmp_path, "uploads/sha256/00/missing")
