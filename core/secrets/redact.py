"""Replacing resolved secret values with ``********`` in anything about to be stored or shown.

A deployment's output can echo a secret in many shapes: the value itself, one line of a
multi-line value (a private key printed line by line), or the value JSON-escaped inside a
task result. Every shape of every value is replaced, longest first, so that a value which
contains another is hidden whole.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

MASK = "********"
# Lines of a multi-line value shorter than this are too common ("-----", "}") to hide alone;
# the whole value is still hidden wherever it appears intact.
MIN_LINE_CHARS = 8


def _shapes(value: str) -> set[str]:
    shapes = {value, value.strip()}
    escaped = json.dumps(value)[1:-1]  # how it looks inside a JSON string
    shapes.add(escaped)
    if "\n" in value:
        shapes.update(
            line.strip() for line in value.splitlines() if len(line.strip()) >= MIN_LINE_CHARS
        )
    return {shape for shape in shapes if shape}


class Redactor:
    """``redactor.text(s)`` / ``redactor.data(obj)``: the same with every secret masked."""

    def __init__(self, values: Iterable[str] = ()) -> None:
        shapes: set[str] = set()
        for value in values:
            shapes |= _shapes(value)
        ordered = sorted(shapes, key=len, reverse=True)
        self._pattern = re.compile("|".join(map(re.escape, ordered))) if ordered else None

    def __bool__(self) -> bool:
        return self._pattern is not None

    def text(self, text: str) -> str:
        if self._pattern is None or not text:
            return text
        return self._pattern.sub(MASK, text)

    def data(self, value: Any) -> Any:
        """A copy of a JSON-like structure with every string (keys too) redacted."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {self.text(str(key)): self.data(item) for key, item in value.items()}
        if isinstance(value, list | tuple):
            return [self.data(item) for item in value]
        return value


def leaf_strings(value: Any) -> list[str]:
    """Every string inside a JSON-like structure (and numbers as text): what a secret
    object hands to a playbook, each of which must be hidden on its own."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, bool) or value is None:
        return []
    if isinstance(value, int | float):
        return [str(value)] if len(str(value)) >= MIN_LINE_CHARS else []
    if isinstance(value, dict):
        return [leaf for item in value.values() for leaf in leaf_strings(item)]
    if isinstance(value, list):
        return [leaf for item in value for leaf in leaf_strings(item)]
    return []
