"""Page cursors (core.page_cursor): what a list hands out comes back as the same sort key,
and anything else is a 422 "Malformed cursor.", whatever the list."""

from __future__ import annotations

import base64
import uuid
from datetime import UTC, datetime

import pytest

from core import page_cursor
from core.errors import InvalidRequest


def _pair(parts: list[str]) -> tuple[datetime, uuid.UUID]:
    created, job_id = parts
    return datetime.fromisoformat(created), uuid.UUID(job_id)


def test_a_cursor_gives_back_its_sort_key() -> None:
    key = (datetime(2026, 11, 26, 4, 5, 6, 789, tzinfo=UTC), uuid.uuid4())
    assert page_cursor.decode(page_cursor.encode(key[0].isoformat(), key[1]), _pair) == key


@pytest.mark.parametrize(
    "cursor",
    [
        "zz",  # not base64
        base64.urlsafe_b64encode(b"\xff\xfe").decode(),  # not text
        page_cursor.encode("2026-11-26T00:00:00+00:00"),  # one part, two expected
        page_cursor.encode("yesterday", uuid.UUID(int=1)),  # a part that does not parse
    ],
    ids=["not-base64", "not-text", "too-few-parts", "unparsable-part"],
)
def test_anything_else_is_a_malformed_cursor(cursor: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        page_cursor.decode(cursor, _pair)
    assert refused.value.message == "Malformed cursor."
    assert refused.value.where == {"query": "cursor"}
