"""Masking secrets in anything about to be shown or stored: log events, exception text,
tracebacks, a deployment's Ansible output. One redactor, three nets, applied recursively to
dicts, lists and tuples (any other object is turned into its ``repr`` first, so a stray
settings object or exception cannot smuggle a value through):

- a value under a secret-looking key (``password``, ``token``, ``authorization``, ...);
- secrets inside text: credentials in URLs (``redis://user:PASS@host``), ``password=...``
  pairs (libpq DSNs), bearer tokens, Conveyor API keys;
- known secret values, in every shape they can take in output: the value, its stripped and
  JSON-escaped forms, and each line of a multi-line value (a private key printed line by
  line). The process's own credentials (from settings) and values resolved from the vault
  are known values.

Known values are replaced longest first, so a value that contains another is hidden whole.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterable, Mapping
from typing import Any

MASK = "********"
# Shorter configured credentials would mask ordinary words (and are too weak to protect
# anyway); values from the vault are masked whatever their length.
MIN_KNOWN_SECRET_CHARS = 6
# Lines of a multi-line value shorter than this are too common ("-----", "}") to hide alone;
# the whole value is still hidden wherever it appears intact.
MIN_LINE_CHARS = 8

_SECRET_KEY_WORDS = (
    "password",
    "passwd",
    "secret",
    "token",
    "authorization",
    "api_key",
    "apikey",
    "private_key",
    "credential",
    "cookie",
)

_URL_USERINFO = re.compile(r"(?P<scheme>\b[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<userinfo>[^/@\s]+)@")
_ASSIGNED_SECRET = re.compile(
    r"(?i)\b(?P<name>password|passwd|pwd|secret|token|api_key|apikey)(?P<sep>\s*=\s*)"
    r"(?P<quote>['\"]?)(?P<value>[^\s'\"&;,]+)"
)
_BEARER = re.compile(r"(?i)\b(?P<scheme>bearer|basic)\s+[A-Za-z0-9._~+/=-]{8,}")
_API_KEY = re.compile(r"\bcvk_[A-Za-z0-9_-]{8,}")
# Matches wherever one of the four patterns above could (a superset): most text has none of
# these, and one search is much cheaper than four substitutions (every log line's every
# string goes through ``text``).
_MAYBE_SECRET = re.compile(
    r"://|(?i:password|passwd|pwd|secret|token|api_key|apikey)\s*=|(?i:bearer|basic)\s|cvk_"
)

_PLAIN = (str, int, float, bool, type(None))


def _mask_userinfo(match: re.Match[str]) -> str:
    user, colon, _ = match["userinfo"].partition(":")
    # user:password keeps the user (useful, not secret); a lone userinfo may be a token.
    return f"{match['scheme']}{user}:{MASK}@" if colon else f"{match['scheme']}{MASK}@"


def secret_key_name(key: str) -> bool:
    lowered = key.lower()
    return any(word in lowered for word in _SECRET_KEY_WORDS)


def _shapes(value: str) -> set[str]:
    """How a value can appear in output."""
    shapes = {value, value.strip(), json.dumps(value)[1:-1]}
    if "\n" in value:
        shapes.update(
            line.strip() for line in value.splitlines() if len(line.strip()) >= MIN_LINE_CHARS
        )
    return {shape for shape in shapes if shape}


class Redactor:
    """Thread-safe; ``add`` may be called while other threads redact."""

    def __init__(self, known: Iterable[str] = (), *, min_chars: int = 1) -> None:
        self._lock = threading.Lock()
        self._known: frozenset[str] = frozenset()
        self._pattern: re.Pattern[str] | None = None
        self.add(*known, min_chars=min_chars)

    def add(self, *values: str, min_chars: int = MIN_KNOWN_SECRET_CHARS) -> None:
        """Mask these values (in all their shapes) from now on; shorter ones are ignored."""
        fresh: set[str] = set()
        for value in values:
            if len(value) >= min_chars:
                fresh |= _shapes(value)
        with self._lock:
            if fresh <= self._known:
                return
            self._known = self._known | fresh
            # Longest first, so a secret that contains another is masked whole.
            alternatives = sorted(self._known, key=len, reverse=True)
            self._pattern = re.compile("|".join(map(re.escape, alternatives)))

    def text(self, value: str) -> str:
        pattern = self._pattern
        if pattern is not None:
            value = pattern.sub(MASK, value)
        if _MAYBE_SECRET.search(value) is None:
            return value
        value = _URL_USERINFO.sub(_mask_userinfo, value)
        value = _ASSIGNED_SECRET.sub(r"\g<name>\g<sep>\g<quote>" + MASK, value)
        value = _BEARER.sub(r"\g<scheme> " + MASK, value)
        return _API_KEY.sub(MASK, value)

    def value(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, _PLAIN):
            return value
        if isinstance(value, Mapping):
            return self.mapping(value)
        if isinstance(value, list | tuple | set | frozenset):
            return [self.value(item) for item in value]
        return self.text(repr(value))

    def mapping(self, values: Mapping[Any, Any]) -> dict[Any, Any]:
        return {
            self.value(key): MASK
            if isinstance(key, str) and secret_key_name(key)
            else self.value(item)
            for key, item in values.items()
        }

    data = value  # a JSON-like structure (an Ansible event), redacted


def leaf_strings(value: Any) -> list[str]:
    """Every string inside a JSON-like structure (and long numbers as text): what a secret
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
