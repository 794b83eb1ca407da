"""The ``?cursor=`` of keyset-paginated lists (rejected rows, a schedule's firings): the sort
key of the last item shown, its parts joined by ``|`` and base64url-encoded. Opaque to
clients, and checked when it comes back: anything that does not decode to the expected
parts is a 422 "Malformed cursor.", never a 500.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import TypeVar

from core.errors import InvalidRequest

SEPARATOR = "|"
K = TypeVar("K")


def encode(*parts: object) -> str:
    """The cursor of a sort key (each part as ``str()`` writes it; none may hold ``|``)."""
    texts = [str(part) for part in parts]
    assert not any(SEPARATOR in text for text in texts), texts
    return base64.urlsafe_b64encode(SEPARATOR.join(texts).encode()).decode()


def decode(cursor: str, parse: Callable[[list[str]], K]) -> K:
    """The sort key back: ``parse`` gets the parts and raises ValueError for anything it
    does not accept (a wrong number of parts, a value out of range)."""
    try:
        parts = base64.urlsafe_b64decode(cursor.encode()).decode().split(SEPARATOR)
        return parse(parts)
    except ValueError as error:  # binascii.Error and UnicodeDecodeError are ValueErrors
        raise InvalidRequest("Malformed cursor.", where={"query": "cursor"}) from error
