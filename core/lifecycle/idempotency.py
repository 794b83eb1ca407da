"""Request fingerprints for ``Idempotency-Key``: same key + same request -> the same job."""

from __future__ import annotations

import hashlib
import json
from typing import Any


def request_fingerprint(request: dict[str, Any]) -> str:
    """A stable hash of a request's meaningful content (key order does not matter)."""
    canonical = json.dumps(request, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()
