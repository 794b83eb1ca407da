"""Masking secrets in anything that is about to be shown or stored as text: log events,
exception text, tracebacks.

Three nets, applied recursively to dicts, lists and tuples (any other object is turned into
its ``repr`` first, so a stray settings object or exception cannot smuggle a value through):

- a value under a secret-looking key (``password``, ``token``, ``authorization``, ...);
- secrets inside text: credentials in URLs (``redis://user:PASS@host``), ``password=...``
  pairs (libpq DSNs), bearer tokens, Conveyor API keys;
- known secret values, wherever they appear: the process's own credentials (from settings)
  and whatever else is registered with ``add`` (e.g. values resolved from a secrets vault).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable, Mapping
from typing import Any

MASK = "***"
# Shorter values would mask ordinary words; such secrets are too weak to protect anyway.
MIN_KNOWN_SECRET_CHARS = 6

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

_PLAIN = (str, int, float, bool, type(None))


def _mask_userinfo(match: re.Match[str]) -> str:
    user, colon, _ = match["userinfo"].partition(":")
    # user:password keeps the user (useful, not secret); a lone userinfo may be a token.
    return f"{match['scheme']}{user}:{MASK}@" if colon else f"{match['scheme']}{MASK}@"


def secret_key_name(key: str) -> bool:
    lowered = key.lower()
    return any(word in lowered for word in _SECRET_KEY_WORDS)


class Redactor:
    """Thread-safe; ``add`` may be called while other threads redact."""

    def __init__(self, known: Iterable[str] = ()) -> None:
        self._lock = threading.Lock()
        self._known: frozenset[str] = frozenset()
        self._pattern: re.Pattern[str] | None = None
        self.add(*known)

    def add(self, *values: str) -> None:
        """Mask these exact values from now on (values under 6 characters are ignored)."""
        fresh = {value for value in values if len(value) >= MIN_KNOWN_SECRET_CHARS}
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
            key: MASK if isinstance(key, str) and secret_key_name(key) else self.value(item)
            for key, item in values.items()
        }
